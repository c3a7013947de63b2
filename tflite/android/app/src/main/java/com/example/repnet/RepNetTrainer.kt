package com.example.repnet

import java.io.File
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.json.JSONException
import org.json.JSONObject
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor

/**
 * Trains a Rep-Net model exported by `keras_repnet.export_tflite` on the phone.
 *
 * The model's signatures do the work: "train" (one optimizer step on a batch, at the
 * learning rate of [learningRate]: a cosine decay from the export's peak to zero over the
 * run, the schedule of `keras-repnet train` and the Python package `repnet_trainer`),
 * "infer" (class probabilities), "get_weights" and "set_weights" (every trained and
 * optimizer variable, by name). The weights persist in [checkpointFile] as an `.npz`
 * in the format of the Python package `repnet_trainer` (so a phone can continue what a desktop
 * started and back), written to a temporary file and renamed: the app may be killed
 * at any moment and still finds the last good checkpoint.
 *
 * Usage, off the main thread (a step takes tens of milliseconds):
 * ```
 * val trainer = RepNetTrainer(File(filesDir, "model.tflite"), File(filesDir, "model.checkpoint.npz"))
 * val (firstEpoch, firstStep) = trainer.restore() ?: (0 to 0)  // after the app was killed
 * val epochs = trainer.recipe.getInt("epochs")  // the model's recipe, as Keras trained
 * for (epoch in firstEpoch until epochs) {
 *     for (step in (if (epoch == firstEpoch) firstStep else 0) until stepsPerEpoch) {
 *         // trainer.batchSize images of height x width x 3 RGB floats in [0, 255] (the model
 *         // preprocesses them itself), in a seeded order so that a resumed run sees the same.
 *         val (pixels, labels) = batch(epoch, step)
 *         val rate = trainer.learningRate(epoch * stepsPerEpoch + step, epochs * stepsPerEpoch)
 *         val loss = trainer.trainStep(pixels, labels, rate)
 *         if ((step + 1) % 50 == 0) trainer.save(epoch, step + 1)
 *     }
 *     trainer.save(epoch + 1, 0)
 * }
 * val probabilities = trainer.classify(pixelsOfOneImage)
 * trainer.close()
 * ```
 * Drop or refill the last partial batch of an epoch: "train" takes exactly [batchSize].
 *
 * @param modelFile the `.tflite` file (copy it out of assets/ first, or map it).
 * @param checkpointFile where [save] writes the weights and [restore] reads them.
 * @param numThreads CPU threads of the interpreter.
 * @param recipe the model's training recipe (`keras_repnet.Recipe`: `side_learning_rate`,
 *   `epochs`, `validation_split`, `seed`, ...), by default the `recipe` of the sidecar
 *   `model.json` that `export_tflite` writes beside the `.tflite` file: the phone trains
 *   with the recipe Keras trained with.
 * @param peakLearningRate where the schedule starts: the recipe's `side_learning_rate`.
 */
class RepNetTrainer(
    modelFile: File,
    private val checkpointFile: File,
    numThreads: Int = 2,
    val recipe: JSONObject = sidecarRecipe(modelFile),
    val peakLearningRate: Float = recipe.getDouble("side_learning_rate").toFloat(),
) : AutoCloseable {
    private val interpreter = Interpreter(modelFile, Interpreter.Options().setNumThreads(numThreads))

    val batchSize: Int
    val height: Int
    val width: Int
    val numClasses: Int

    init {
        val missing = SIGNATURES.filter { it !in interpreter.signatureKeys }
        require(missing.isEmpty()) {
            "$modelFile lacks the signatures $missing (it has ${interpreter.signatureKeys.toList()}). " +
                "Export the model with keras_repnet.export_tflite."
        }
        val x = interpreter.getInputTensorFromSignature("x", "train").shape()
        batchSize = x[0]
        height = x[1]
        width = x[2]
        numClasses = interpreter.getOutputTensorFromSignature("logits", "infer").shape().last()
    }

    /**
     * The learning rate of step [step] (0-based, counted over all epochs) of [totalSteps]:
     * `peak * (1 + cos(pi * step / totalSteps)) / 2`, Keras' `CosineDecay` to zero.
     */
    fun learningRate(step: Int, totalSteps: Int): Float {
        val progress = step.coerceAtMost(totalSteps).toDouble() / totalSteps.coerceAtLeast(1)
        return (peakLearningRate * 0.5 * (1.0 + Math.cos(Math.PI * progress))).toFloat()
    }

    /**
     * One optimizer step at [learningRate] (the side network's; the head's is scaled by the
     * export's ratio); returns the loss of the batch. Pixels are NHWC RGB in [0, 255].
     */
    fun trainStep(pixels: FloatArray, labels: IntArray, learningRate: Float): Float {
        require(pixels.size == batchSize * height * width * 3) {
            "Expected $batchSize images of ${height}x${width}x3 floats. Received: ${pixels.size} floats."
        }
        require(labels.size == batchSize) {
            "Expected $batchSize labels (the exported batch size). Received: ${labels.size}."
        }
        val outOfRange = labels.filter { it !in 0 until numClasses }
        require(outOfRange.isEmpty()) {
            "Labels must be class indices in [0, $numClasses). Received: $outOfRange."
        }
        val x = direct(pixels.size * 4).apply { asFloatBuffer().put(pixels) }
        val y = direct(labels.size * 4).apply { asIntBuffer().put(labels) }
        require(learningRate >= 0f && learningRate.isFinite()) {
            "The learning rate must be finite and not negative. Received: $learningRate."
        }
        val rate = direct(4).apply { putFloat(0, learningRate) }
        val loss = direct(4)
        interpreter.runSignature(
            mapOf("x" to x, "y" to y, "learning_rate" to rate), mapOf("loss" to loss), "train")
        loss.rewind()
        return loss.float
    }

    /** Class probabilities of one image (height x width x 3 RGB floats in [0, 255]). */
    fun classify(pixels: FloatArray): FloatArray {
        require(pixels.size == height * width * 3) {
            "Expected one image of ${height}x${width}x3 floats. Received: ${pixels.size} floats."
        }
        // A Java array (not a buffer) lets the interpreter resize "infer" to a batch of 1.
        val image = Array(1) { Array(height) { r -> Array(width) { c ->
            FloatArray(3) { k -> pixels[(r * width + c) * 3 + k] } } } }
        val probabilities = Array(1) { FloatArray(numClasses) }
        interpreter.runSignature(mapOf("x" to image), mapOf("probabilities" to probabilities), "infer")
        return probabilities[0]
    }

    /** Every variable of "get_weights", by name, as numpy-style arrays. */
    fun getWeights(): Map<String, NpyArray> {
        // Interpreter.runSignature refuses an empty input map ("Inputs should not be null or
        // empty"): the export gives "get_weights" an ignored input, fed zeros here.
        val inputNames = interpreter.getSignatureInputs(GET)
        check(inputNames.isNotEmpty()) {
            "This model's get_weights signature takes no input, which Interpreter.runSignature " +
                "cannot call. Export it again with a keras-repnet that adds an ignored input."
        }
        val inputs = inputNames.associateWith { direct(input(it, GET).numBytes()) }
        val outputs = interpreter.getSignatureOutputs(GET).associateWith { direct(output(it, GET).numBytes()) }
        interpreter.runSignature(inputs, outputs, GET)
        return outputs.mapValues { (name, buffer) ->
            val tensor = output(name, GET)
            NpyArray(descr(tensor.dataType()), tensor.shape(), ByteArray(buffer.capacity()).also {
                buffer.rewind()
                buffer.get(it)
            })
        }
    }

    /** Assigns [weights] (as from [getWeights]); fails clearly when they are another model's. */
    fun setWeights(weights: Map<String, NpyArray>) {
        val names = interpreter.getSignatureInputs(SET).toList()
        val mismatched = names.filter { name ->
            val array = weights[name]
            val tensor = input(name, SET)
            array != null && (!array.shape.contentEquals(tensor.shape()) || array.descr != descr(tensor.dataType()))
        }
        val missing = names.filter { it !in weights }
        val unexpected = weights.keys - names.toSet()
        require(missing.isEmpty() && unexpected.isEmpty() && mismatched.isEmpty()) {
            "The weights belong to another model. Missing: $missing; unexpected: $unexpected; " +
                "wrong shape or dtype: $mismatched. Use a checkpoint written for this model."
        }
        val inputs = names.associateWith { name -> weights.getValue(name).data.let { direct(it.size).put(it).rewind() } }
        val outputs = interpreter.getSignatureOutputs(SET).associateWith { direct(output(it, SET).numBytes()) }
        interpreter.runSignature(inputs, outputs, SET)
    }

    /**
     * The `meta.json` of the last checkpoint restored or saved. Fields this class does not
     * use (the Python trainer's `seed`, `validation_split`, `num_examples`, `history`, an
     * app's own) are kept and written back by [save].
     */
    private var meta = JSONObject()

    /** Writes all weights and the position ([epoch] finished epochs, [step] steps into the next). */
    fun save(epoch: Int, step: Int) {
        val meta = JSONObject(meta.toString())
            .put("format", CHECKPOINT_FORMAT).put("epoch", epoch).put("step", step)
        // The Python trainer's running loss of the unfinished epoch: stale once this class has
        // trained, so it goes; the Python trainer then averages over the steps after resuming.
        meta.remove("loss_sum")
        meta.remove("loss_steps")
        val metaBytes = meta.toString().toByteArray(Charsets.UTF_8)
        Npz.writeAtomically(checkpointFile,
            getWeights() + (META_KEY to NpyArray("|u1", intArrayOf(metaBytes.size), metaBytes)))
        this.meta = meta
    }

    /**
     * Restores the checkpoint and returns (epoch, step) to continue from, or null when there is
     * none yet. A truncated or corrupt checkpoint is reported and left untouched.
     */
    fun restore(): Pair<Int, Int>? {
        if (!checkpointFile.exists()) return null
        val arrays = try {
            Npz.read(checkpointFile)
        } catch (error: IOException) {
            throw IllegalStateException("The checkpoint $checkpointFile is truncated or corrupt " +
                "(${error.message}). It was left untouched: delete it to start over.", error)
        }
        val text = arrays[META_KEY]?.let { String(it.data, Charsets.UTF_8) }
        val meta = try {
            text?.let { JSONObject(it) }
        } catch (error: JSONException) {
            null
        }
        check(meta != null && meta.optString("format") == CHECKPOINT_FORMAT) {
            "$checkpointFile is not a $CHECKPOINT_FORMAT checkpoint (its $META_KEY is " +
                "${text?.take(200)}). It was left untouched: delete it to start over."
        }
        // Only epoch and step are required; every other field is kept for the next save.
        val (epoch, step) = listOf("epoch", "step").map { key ->
            val value = meta.opt(key)
            check(value is Int && value >= 0) {
                "$checkpointFile needs \"$key\" as an integer >= 0 in its $META_KEY. Received: " +
                    "$key=$value. It was left untouched: delete it to start over."
            }
            value
        }
        setWeights(arrays - META_KEY)
        this.meta = meta
        return epoch to step
    }

    override fun close() = interpreter.close()

    private fun input(name: String, signature: String): Tensor =
        interpreter.getInputTensorFromSignature(name, signature)

    private fun output(name: String, signature: String): Tensor =
        interpreter.getOutputTensorFromSignature(name, signature)

    companion object {
        private const val GET = "get_weights"
        private const val SET = "set_weights"
        private const val CHECKPOINT_FORMAT = "keras-repnet-checkpoint/1"
        private const val MODEL_FORMAT = "keras-repnet-tflite/3"
        private const val META_KEY = "meta.json"
        private val SIGNATURES = listOf("train", "infer", GET, SET)

        /** The training recipe in the sidecar `.json` beside [modelFile]. */
        fun sidecarRecipe(modelFile: File): JSONObject {
            val sidecar = File(modelFile.parentFile, modelFile.nameWithoutExtension + ".json")
            require(sidecar.exists()) {
                "No sidecar at $sidecar: copy the .json that export_tflite wrote beside " +
                    "${modelFile.name}, or pass recipe."
            }
            val metadata = JSONObject(sidecar.readText())
            require(metadata.optString("format") == MODEL_FORMAT) {
                "$sidecar has format ${metadata.opt("format")}, expected $MODEL_FORMAT: " +
                    "export the model again with keras_repnet.export_tflite."
            }
            return metadata.getJSONObject("recipe")
        }

        private fun direct(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())

        /** The numpy dtype of a tensor type; Android's ABIs are all little-endian. */
        private fun descr(type: DataType): String = when (type) {
            DataType.FLOAT32 -> "<f4"
            DataType.INT32 -> "<i4"
            DataType.INT64 -> "<i8"
            DataType.INT8 -> "|i1"
            DataType.UINT8 -> "|u1"
            DataType.BOOL -> "|b1"
            else -> throw IllegalArgumentException("Unsupported weight type $type")
        }
    }
}
