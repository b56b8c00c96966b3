"""The fake TensorRT/pycuda enforce the real APIs' rules; otherwise the backend tests would prove little.

Each case is a mistake the real stack punishes (a wrong answer, a False return, an error);
the fake must punish it the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import assert_released

from agent.engine import BuildOptions, build_engine


class Recorder:
    """A TensorRT logger keeping its messages (the fake's ILogger rules apply to it)."""

    def __new__(cls, trt):
        class _Recorder(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.messages = []

            def log(self, severity, msg):
                self.messages.append((severity, msg))

        return _Recorder()


@pytest.fixture
def dynamic_engine(fake_gpu, dynamic_model, tmp_path):
    path = tmp_path / "dyn.engine"
    build_engine(BuildOptions(dynamic_model, path, batch=2))
    trt, cuda = fake_gpu.trt, fake_gpu.cuda
    logger = Recorder(trt)
    cuda.init()
    ctx = cuda.Device(0).make_context()
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    parts = [trt, cuda, engine, context, logger]
    yield parts
    parts.clear()  # TensorRT objects go before their CUDA context, as in the backend
    del context, engine, runtime
    ctx.detach()
    assert fake_gpu.cuda.FAKE.problems == []


def test_execute_without_input_shape_or_addresses_fails(dynamic_engine):
    _, cuda, engine, context, logger = dynamic_engine
    stream = cuda.Stream()
    assert tuple(engine.get_tensor_shape("images")) == (-1, 3, 416, 416)
    assert context.execute_async_v3(stream.handle) is False
    assert "not set" in logger.messages[-1][1]
    assert context.set_input_shape("images", (1, 3, 416, 416))
    assert context.execute_async_v3(stream.handle) is False  # no addresses yet
    assert "missing" in logger.messages[-1][1]
    assert not context.set_input_shape("images", (3, 3, 416, 416))  # the profile stops at 2
    assert "optimization profiles" in logger.messages[-1][1]
    assert not context.set_input_shape("images", (1, 3, 320, 320))


def test_outputs_are_stale_until_the_stream_is_synchronized(dynamic_engine):
    _, cuda, _, context, _ = dynamic_engine
    stream = cuda.Stream()
    assert context.set_input_shape("images", (1, 3, 416, 416))
    out_shape = tuple(context.get_tensor_shape("output0"))
    assert out_shape[0] == 1
    host_in = cuda.pagelocked_empty((1, 3, 416, 416), np.float32)
    host_in[:] = 0.5
    host_out = cuda.pagelocked_empty(out_shape, np.float32)
    host_out[:] = 7.0
    d_in, d_out = cuda.mem_alloc(host_in.nbytes), cuda.mem_alloc(host_out.nbytes)
    assert context.set_tensor_address("images", int(d_in))
    assert context.set_tensor_address("output0", int(d_out))
    cuda.memcpy_htod_async(d_in, host_in, stream)
    assert context.execute_async_v3(stream.handle)
    cuda.memcpy_dtoh_async(host_out, d_out, stream)
    assert (host_out == 7.0).all()  # nothing has run yet
    stream.synchronize()
    assert not (host_out == 7.0).any() and np.isfinite(host_out).all()
    with pytest.raises(cuda.LogicError, match="not page-locked"):
        cuda.memcpy_htod_async(d_in, np.zeros((1, 3, 416, 416), np.float32), stream)
    d_in.free()
    d_out.free()
    with pytest.raises(cuda.LogicError):
        d_in.free()


def test_reads_past_an_allocation_are_illegal_accesses(dynamic_engine):
    _, cuda, _, context, _ = dynamic_engine
    stream = cuda.Stream()
    assert context.set_input_shape("images", (2, 3, 416, 416))
    small_in = cuda.mem_alloc(1 * 3 * 416 * 416 * 4)  # room for one image, the shape says two
    out = cuda.mem_alloc(int(np.prod(tuple(context.get_tensor_shape("output0")))) * 4)
    context.set_tensor_address("images", int(small_in))
    context.set_tensor_address("output0", int(out))
    assert context.execute_async_v3(stream.handle)
    with pytest.raises(cuda.LaunchError, match="illegal memory access"):
        stream.synchronize()
    small_in.free()
    out.free()


def test_cuda_calls_need_a_current_context(fake_gpu):
    cuda = fake_gpu.cuda
    with pytest.raises(cuda.LogicError, match="initialization error"):
        cuda.Device(0)
    cuda.init()
    with pytest.raises(cuda.LogicError, match="invalid device context"):
        cuda.mem_alloc(16)
    ctx = cuda.Device(0).make_context()
    alloc = cuda.mem_alloc(16)
    ctx.detach()  # destroyed with memory still allocated: reported as a leak
    assert fake_gpu.cuda.FAKE.problems and "live allocations" in fake_gpu.cuda.FAKE.problems[0]
    with pytest.raises(cuda.LogicError):
        alloc.free()


def test_api_generations_hide_each_other(fake_gpu, model_path, tmp_path):
    trt = fake_gpu.trt
    for api, has_v3, has_v2 in (("v3", True, False), ("both", True, True), ("v2", False, True)):
        fake_gpu.knobs.configure(api=api)
        path = tmp_path / f"{api}.engine"
        build_engine(BuildOptions(model_path, path))
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(path.read_bytes())
        assert hasattr(engine, "num_io_tensors") is has_v3 and hasattr(engine, "num_bindings") is has_v2
        assert hasattr(trt, "TensorIOMode") is has_v3
        del engine
    assert_released(fake_gpu)


def test_loggers_and_plans_follow_the_real_rules(fake_gpu, model_path, tmp_path):
    trt = fake_gpu.trt

    class Forgetful(trt.ILogger):
        def __init__(self) -> None:  # does not call ILogger.__init__
            self.messages = []

        def log(self, severity, msg):
            self.messages.append(msg)

    with pytest.raises(TypeError, match="__init__"):
        trt.Runtime(Forgetful())
    logger = Recorder(trt)
    assert trt.Runtime(logger).deserialize_cuda_engine(b"not a plan") is None
    assert logger.messages[-1][0] == trt.ILogger.Severity.ERROR and "Magic Tag" in logger.messages[-1][1]
    path = tmp_path / "nms.engine"
    build_engine(BuildOptions(model_path, path, nms=True))
    fake_gpu.knobs.STATE.plugins = False  # a fresh process that never called init_libnvinfer_plugins
    assert trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes()) is None
    assert "IPluginCreator not found" in logger.messages[-1][1]
