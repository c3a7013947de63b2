"""LiteRT's C API through ctypes: a compiled model with its op profiler.

`ai_edge_litert`'s Python `Interpreter` has no profiler. `libLiteRt.so`,
which the same package ships, exports LiteRT's public C API
(`litert/c/litert_compiled_model.h`, `litert_profiler.h`,
`litert_options.h`, `litert_tensor_buffer.h` in
github.com/google-ai-edge/LiteRT): a `CompiledModel` built with runtime
option `enable_profiling = true` records one event per builtin kernel call
(`OPERATOR_INVOKE_EVENT`, with the node index) and one per XNNPACK
operator inside a delegated partition
(`DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT`, with XNNPACK's operator name).
Options travel as the TOML payloads that the C++ option builders write:
`xnnpack` (`num_threads`, `kernel_mode`: `"delegate"` for XNNPACK,
`"builtin"` for LiteRT's builtin kernels only) and
`runtime_options_string`. Only public C entry points are used.

    model = CompiledModel("model.tflite", threads=2, kernels="delegate")
    train = model.signature("train")
    train.run(x=images, y=labels, learning_rate=np.float32(1e-3))
    events = model.profile(lambda: train.run(...), runs=5)
"""

import ctypes
import dataclasses
import os

import numpy as np

# `LiteRtProfilerEventType`.
OPERATOR_INVOKE_EVENT = 1 << 1
DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT = 1 << 3
# `LiteRtElementType` -> numpy.
_DTYPES = {1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 9: np.int8}
_ALIGNMENT = 64  # LITERT_HOST_MEMORY_BUFFER_ALIGNMENT
_CPU = 1  # kLiteRtHwAcceleratorCpu
_P = ctypes.c_void_p


class _Layout(ctypes.Structure):
    _fields_ = [
        ("rank_and_flags", ctypes.c_uint32),  # rank: 7 bits, has_strides: 1
        ("dimensions", ctypes.c_int32 * 8),
        ("strides", ctypes.c_uint32 * 8),
    ]


class _RankedTensorType(ctypes.Structure):
    _fields_ = [("element_type", ctypes.c_int), ("layout", _Layout)]


class _MemoryUsage(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("total", "in_use", "private")]


class _Event(ctypes.Structure):  # ProfiledEventData
    _fields_ = [
        ("tag", ctypes.c_char_p),
        ("event_type", ctypes.c_int),
        ("start_us", ctypes.c_uint64),
        ("elapsed_us", ctypes.c_uint64),
        ("begin_memory", _MemoryUsage),
        ("end_memory", _MemoryUsage),
        ("metadata1", ctypes.c_uint64),
        ("metadata2", ctypes.c_uint64),
        ("source", ctypes.c_int),
    ]


@dataclasses.dataclass(frozen=True)
class Event:
    """One profiled call: `node` is the node index of a builtin kernel
    (`delegated` False) or XNNPACK's operator index in its partition."""

    tag: str
    microseconds: int
    node: int
    delegated: bool


def library():
    import ai_edge_litert

    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    return ctypes.CDLL(path)


class _Api:
    def __init__(self):
        self.lib = library()
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.strdup.restype = _P
        self.libc.strdup.argtypes = [ctypes.c_char_p]
        self.free = ctypes.cast(self.libc.free, _P)

    def __call__(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status:
            raise RuntimeError(f"{name} failed: LiteRtStatus {status}")

    def opaque(self, options, identifier, toml):
        """Adds a TOML payload (owned and freed by LiteRT) to `options`."""
        handle = _P()
        payload = _P(self.libc.strdup(toml.encode()))
        self("LiteRtCreateOpaqueOptions", identifier.encode(), payload, self.free,
             ctypes.byref(handle))
        self("LiteRtAddOpaqueOptions", options, handle)


class CompiledModel:
    """A `.tflite` file compiled for the CPU, with its profiler on."""

    def __init__(self, path, threads=2, kernels="delegate", profile=True):
        self.api = api = _Api()
        self.environment = _P()
        api("LiteRtCreateEnvironment", 0, None, ctypes.byref(self.environment))
        self.model = _P()
        api("LiteRtCreateModelFromFile", self.environment, str(path).encode(),
            ctypes.byref(self.model))
        options = _P()
        api("LiteRtCreateOptions", ctypes.byref(options))
        api("LiteRtSetOptionsHardwareAccelerators", options, _CPU)
        api.opaque(options, "xnnpack",
                   f'kernel_mode = "{kernels}"\nnum_threads = {threads}\n')
        if profile:
            api.opaque(options, "runtime_options_string", "enable_profiling = true\n")
        self.compiled = _P()
        api("LiteRtCreateCompiledModel", self.environment, self.model, options,
            ctypes.byref(self.compiled))
        self.profiler = _P()
        if profile:
            api("LiteRtCompiledModelGetProfiler", self.compiled,
                ctypes.byref(self.profiler))
        count = ctypes.c_size_t()
        api("LiteRtGetNumModelSignatures", self.model, ctypes.byref(count))
        self.signatures = {}
        for index in range(count.value):
            handle = _P()
            api("LiteRtGetModelSignature", self.model, ctypes.c_size_t(index),
                ctypes.byref(handle))
            key = ctypes.c_char_p()
            api("LiteRtGetSignatureKey", handle, ctypes.byref(key))
            self.signatures[key.value.decode()] = (index, handle)

    def signature(self, key, batch=None):
        return Signature(self, key, batch)

    def profile(self, function, runs):
        """The events of `runs` calls of `function` (after none: warm it
        up first)."""
        api = self.api
        api("LiteRtResetProfiler", self.profiler)
        api("LiteRtStartProfiler", self.profiler)
        for _ in range(runs):
            function()
        api("LiteRtStopProfiler", self.profiler)
        count = ctypes.c_int()
        api("LiteRtGetNumProfilerEvents", self.profiler, ctypes.byref(count))
        raw = (_Event * count.value)()
        api("LiteRtGetProfilerEvents", self.profiler, count, raw)
        events = []
        for event in raw:
            if event.event_type not in (
                OPERATOR_INVOKE_EVENT, DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT
            ):
                continue
            events.append(
                Event(
                    tag=event.tag.decode(),
                    microseconds=int(event.elapsed_us),
                    node=int(event.metadata1),
                    delegated=event.event_type == DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT,
                )
            )
        return events

    def summary(self):
        """LiteRT's own text summary of the events recorded so far."""
        text = ctypes.c_char_p()
        self.api("LiteRtGetProfileSummary", self.profiler, self.compiled,
                 ctypes.byref(text))
        return text.value.decode()


class Signature:
    """Host-memory buffers for one signature's inputs and outputs."""

    def __init__(self, model, key, batch=None):
        self.model = model
        api = model.api
        self.index, handle = model.signatures[key]
        self.inputs = self._tensors(handle, "Input", batch, resize=True)
        self.outputs = self._tensors(handle, "Output", batch, resize=False)

    def _tensors(self, handle, kind, batch, resize):
        api, model = self.model.api, self.model
        count = ctypes.c_size_t()
        api(f"LiteRtGetNumSignature{kind}s", handle, ctypes.byref(count))
        tensors = {}
        for index in range(count.value):
            name, tensor = ctypes.c_char_p(), _P()
            api(f"LiteRtGetSignature{kind}Name", handle, ctypes.c_size_t(index),
                ctypes.byref(name))
            api(f"LiteRtGetSignature{kind}TensorByIndex", handle,
                ctypes.c_size_t(index), ctypes.byref(tensor))
            kind_type = _RankedTensorType()
            api("LiteRtGetRankedTensorType", tensor, ctypes.byref(kind_type))
            rank = kind_type.layout.rank_and_flags & 0x7F
            shape = [kind_type.layout.dimensions[i] for i in range(rank)]
            if -1 in shape:
                if batch is None:
                    raise ValueError(f"{name.value} has a dynamic shape {shape}: pass batch=")
                shape = [batch if n == -1 else n for n in shape]
                for i, n in enumerate(shape):
                    kind_type.layout.dimensions[i] = n
                if resize:
                    dims = (ctypes.c_int * rank)(*shape)
                    api("LiteRtCompiledModelResizeInputTensor", model.compiled,
                        ctypes.c_size_t(self.index), ctypes.c_size_t(index), dims,
                        ctypes.c_size_t(rank))
            dtype = np.dtype(_DTYPES[kind_type.element_type])
            nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
            raw = np.zeros(nbytes + _ALIGNMENT, np.uint8)
            offset = (-raw.ctypes.data) % _ALIGNMENT
            array = raw[offset : offset + nbytes].view(dtype)[: int(np.prod(shape))]
            array = array.reshape(shape)
            buffer = _P()
            api("LiteRtCreateTensorBufferFromHostMemory", ctypes.byref(kind_type),
                _P(array.ctypes.data), ctypes.c_size_t(nbytes), None,
                ctypes.byref(buffer))
            tensors[name.value.decode()] = (array, buffer, raw)
        return tensors

    def run(self, **values):
        """Copies `values` into the inputs, runs, returns the outputs."""
        for name, value in values.items():
            self.inputs[name][0][...] = value
        inputs = [b for _, b, _ in self.inputs.values()]
        outputs = [b for _, b, _ in self.outputs.values()]
        self.model.api(
            "LiteRtRunCompiledModel", self.model.compiled, ctypes.c_size_t(self.index),
            ctypes.c_size_t(len(inputs)), (_P * len(inputs))(*inputs),
            ctypes.c_size_t(len(outputs)), (_P * len(outputs))(*outputs),
        )
        return {name: array.copy() for name, (array, _, _) in self.outputs.items()}
