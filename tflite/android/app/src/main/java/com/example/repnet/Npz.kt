package com.example.repnet

import java.io.BufferedOutputStream
import java.io.File
import java.io.FileOutputStream
import java.io.IOException
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import java.util.zip.CRC32
import java.util.zip.ZipEntry
import java.util.zip.ZipFile
import java.util.zip.ZipOutputStream

/** One array of an `.npz` file: numpy dtype string (`<f4`), shape and raw little-endian bytes. */
class NpyArray(val descr: String, val shape: IntArray, val data: ByteArray)

/**
 * Reads and writes `.npz` files (a zip of `.npy` arrays), the checkpoint format that
 * the Python package `repnet_trainer` shares: `numpy.load` reads what this writes and back.
 */
object Npz {
    private val MAGIC = byteArrayOf(0x93.toByte(), 'N'.code.toByte(), 'U'.code.toByte(),
        'M'.code.toByte(), 'P'.code.toByte(), 'Y'.code.toByte())

    /** Reads every array of [file]; throws IOException when it is truncated or corrupt. */
    fun read(file: File): Map<String, NpyArray> =
        ZipFile(file).use { zip ->
            zip.entries().asSequence().associate { entry ->
                val bytes = zip.getInputStream(entry).use { it.readBytes() }
                if (entry.crc != -1L && CRC32().apply { update(bytes) }.value != entry.crc) {
                    throw IOException("${entry.name} fails its CRC check")
                }
                entry.name.removeSuffix(".npy") to parse(entry.name, bytes)
            }
        }

    /**
     * Writes [arrays] to [file] atomically: to a temporary file in the same folder,
     * synced to disk, read back, then renamed over [file]. A crash at any moment leaves
     * the old or the new file, never half of one.
     */
    fun writeAtomically(file: File, arrays: Map<String, NpyArray>) {
        val folder = file.absoluteFile.parentFile!!.apply { mkdirs() }
        val temporary = File.createTempFile(".${file.name}.", ".tmp", folder)
        try {
            val stream = FileOutputStream(temporary)
            ZipOutputStream(BufferedOutputStream(stream)).use { zip ->
                for ((name, array) in arrays) {
                    zip.putNextEntry(ZipEntry("$name.npy"))
                    zip.write(header(array.descr, array.shape))
                    zip.write(array.data)
                    zip.closeEntry()
                }
                zip.finish()
                zip.flush()
                stream.fd.sync()
            }
            if (read(temporary).keys != arrays.keys) {
                throw IOException("$temporary reads back wrong")
            }
            Files.move(temporary.toPath(), file.toPath(),
                StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING)
        } finally {
            temporary.delete() // No-op after the move.
        }
    }

    private fun header(descr: String, shape: IntArray): ByteArray {
        val dims = if (shape.size == 1) "(${shape[0]},)" else shape.joinToString(", ", "(", ")")
        val text = "{'descr': '$descr', 'fortran_order': False, 'shape': $dims, }"
        // Version 1.0 header, padded so that the data starts at a multiple of 64 bytes.
        val padding = (64 - (10 + text.length + 1) % 64) % 64
        val line = text + " ".repeat(padding) + "\n"
        return MAGIC + byteArrayOf(1, 0, (line.length and 0xff).toByte(), (line.length shr 8).toByte()) +
            line.toByteArray(Charsets.US_ASCII)
    }

    private fun parse(name: String, bytes: ByteArray): NpyArray {
        if (bytes.size < 10 || !bytes.copyOfRange(0, 6).contentEquals(MAGIC)) {
            throw IOException("$name is not an .npy array")
        }
        fun u8(i: Int) = bytes[i].toInt() and 0xff
        val (length, start) = when (bytes[6].toInt()) {
            1 -> (u8(8) or (u8(9) shl 8)) to 10
            2, 3 -> (u8(8) or (u8(9) shl 8) or (u8(10) shl 16) or (u8(11) shl 24)) to 12
            else -> throw IOException("$name has an unknown .npy version ${bytes[6]}")
        }
        if (start + length > bytes.size) throw IOException("$name is truncated")
        val text = String(bytes, start, length, Charsets.ISO_8859_1)
        val descr = Regex("'descr':\\s*'([^']+)'").find(text)?.groupValues?.get(1)
        val dims = Regex("'shape':\\s*\\(([^)]*)\\)").find(text)?.groupValues?.get(1)
        if (descr == null || dims == null || "'fortran_order': True" in text) {
            throw IOException("$name has an unsupported .npy header: $text")
        }
        val shape = dims.split(",").map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }
        val data = bytes.copyOfRange(start + length, bytes.size)
        val itemSize = descr.drop(2).toIntOrNull() ?: throw IOException("$name: dtype $descr")
        if (data.size != shape.fold(1) { product, dim -> product * dim } * itemSize) {
            throw IOException("$name holds ${data.size} bytes, not those of $descr $shape")
        }
        return NpyArray(descr, shape.toIntArray(), data)
    }
}
