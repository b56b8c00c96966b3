"""The fake TensorRT/pycuda enforce the real APIs' rules; otherwise the backend tests would prove little.

Each case is a mistake the real stack punishes (a wrong answer, a False return, an error);
the fake must punish it the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from backend_models import assert_released

from agent.modeltools.tensorrt.build import BuildOptions, build_engine


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
    for generation, has_v3, has_v2 in (("11", True, False), ("10", True, False), ("8.6", True, True),
                                       ("8.5", True, True), ("8.4", False, True)):
        fake_gpu.knobs.configure(generation=generation)
        path = tmp_path / f"{generation}.engine"
        build_engine(BuildOptions(model_path, path))
        engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(path.read_bytes())
        assert hasattr(engine, "num_io_tensors") is has_v3 and hasattr(engine, "num_bindings") is has_v2
        assert hasattr(trt, "TensorIOMode") is has_v3
        del engine
    assert_released(fake_gpu)


@pytest.mark.parametrize(("generation", "members"), [
    ("8.4", {"FLOAT", "HALF", "INT8", "INT32", "BOOL"}),
    ("8.5", {"FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"}),
    ("8.6", {"FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8"}),
    ("10", {"FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8", "FP8", "BF16", "INT64", "INT4"}),
])
def test_each_release_has_its_own_data_types(fake_gpu, generation, members):
    trt = fake_gpu.trt
    fake_gpu.knobs.configure(generation=generation)
    assert set(trt.DataType.__members__) == members
    assert hasattr(trt, "uint8") is ("UINT8" in members) and hasattr(trt, "int64") is ("INT64" in members)
    assert trt.DataType.FLOAT.value == 0 and trt.DataType.BOOL.value == 4


def test_nptype_breaks_where_the_real_one_does(fake_gpu):
    """TensorRT 8.4-8.5's nptype builds its table with np.bool: gone in numpy 1.24-1.26."""
    trt = fake_gpu.trt
    for generation in ("8.4", "8.5"):
        fake_gpu.knobs.configure(generation=generation, numpy="1.24")
        with pytest.raises(AttributeError, match="has no attribute 'bool'"):
            trt.nptype(trt.DataType.FLOAT)  # any type: the whole table is built first
        fake_gpu.knobs.configure(numpy="1.23")
        with pytest.warns(DeprecationWarning):
            assert trt.nptype(trt.DataType.BOOL) is bool  # the builtin, under a deprecated alias
        fake_gpu.knobs.configure(numpy="2.0")
        assert trt.nptype(trt.DataType.BOOL) is np.bool_  # numpy 2 brought np.bool back
    fake_gpu.knobs.configure(generation="8.6", numpy="1.24")
    assert trt.nptype(trt.DataType.BOOL) is np.bool_ and trt.nptype(trt.DataType.UINT8) is np.uint8
    with pytest.raises(TypeError, match="Could not resolve"):
        trt.nptype(trt.DataType.FP8)
    fake_gpu.knobs.configure(generation="10")
    assert trt.nptype(trt.DataType.INT64) is np.int64


def test_optimization_profile_shapes_must_be_ordered(fake_gpu):
    """The bindings' set_shape raises RuntimeError at the first inconsistent selector."""
    profile = fake_gpu.trt.Builder(Recorder(fake_gpu.trt)).create_optimization_profile()
    profile.set_shape("images", (1, 3, 416, 416), (2, 3, 416, 416), (2, 3, 416, 416))
    with pytest.raises(RuntimeError, match="Shape provided for opt is inconsistent"):
        profile.set_shape("images", (2, 3, 416, 416), (1, 3, 416, 416), (1, 3, 416, 416))
    with pytest.raises(RuntimeError, match="Shape provided for max is inconsistent"):
        profile.set_shape("images", (1, 3, 416, 416), (2, 3, 416, 416), (1, 3, 416, 416))
    with pytest.raises(RuntimeError, match="Shape provided for min is inconsistent"):
        profile.set_shape("images", (-1, 3, 416, 416), (1, 3, 416, 416), (1, 3, 416, 416))


def test_timing_cache_of_another_gpu_is_refused(fake_gpu):
    trt, cuda = fake_gpu.trt, fake_gpu.cuda
    logger = Recorder(trt)
    config = trt.Builder(logger).create_builder_config()
    data = bytes(config.create_timing_cache(b"").serialize())
    cuda.FAKE.device_name, cuda.FAKE.compute_capability = "Xavier (fake)", (7, 2)
    foreign = config.create_timing_cache(data)
    assert config.set_timing_cache(foreign, False) is False and "mismatch" in logger.messages[-1][1]
    assert config.set_timing_cache(foreign, True) is True
    fake_gpu.knobs.configure(version="10.4.0.1")
    assert config.create_timing_cache(data) is None  # another TensorRT's cache does not load


def test_efficient_nms_refuses_iou_zero_from_8_5(fake_gpu, model_path, tmp_path):
    """EfficientNMS_TRT's creator validates iouThreshold > 0 (TensorRT 8.5+): the parse fails."""
    import onnx

    from agent.inference.backends.onnx_info import read_summary
    from agent.modeltools.tensorrt.nms_plugin import add_efficient_nms

    summary = read_summary(model_path, "test")
    model = add_efficient_nms(onnx.load(str(model_path)), summary.info, 0.25, 0.5)
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    (iou,) = [a for a in node.attribute if a.name == "iou_threshold"]
    iou.f = 0.0
    onnx.save(model, str(tmp_path / "iou0.onnx"))
    trt = fake_gpu.trt
    for generation, parses in (("8.5", False), ("10", False), ("11", False)):
        fake_gpu.knobs.configure(generation=generation)
        logger = Recorder(trt)
        trt.init_libnvinfer_plugins(logger, "")
        network = trt.Builder(logger).create_network(0 if generation in ("10", "11") else 1)
        parser = trt.OnnxParser(network, logger)
        assert parser.parse((tmp_path / "iou0.onnx").read_bytes()) is parses
        assert "Could not create plugin" in str(parser.get_error(0))
        assert any("iouThreshold > 0.0F" in m for _, m in logger.messages)


def test_the_newest_release_has_no_calibrator_or_platform_queries(fake_gpu):
    """TensorRT's main branch removed what 10.1 and 10.5 deprecated (checked with hasattr)."""
    trt = fake_gpu.trt
    fake_gpu.knobs.configure(generation="10")
    builder = trt.Builder(Recorder(trt))
    assert hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(builder, "platform_has_fast_fp16")
    assert hasattr(builder.create_builder_config(), "int8_calibrator") and hasattr(trt.BuilderFlag, "INT8")
    fake_gpu.knobs.configure(generation="11")
    config = builder.create_builder_config()
    assert not hasattr(trt, "IInt8EntropyCalibrator2") and not hasattr(trt, "CalibrationAlgoType")
    assert not hasattr(builder, "platform_has_fast_fp16") and not hasattr(builder, "platform_has_fast_int8")
    assert not hasattr(config, "int8_calibrator") and not hasattr(config, "set_calibration_profile")
    assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt.BuilderFlag, "FP16")
    with pytest.raises(AttributeError):
        config.int8_calibrator = None


def test_tensorrt_keeps_the_first_logger_while_a_runtime_lives(fake_gpu):
    trt = fake_gpu.trt
    first, second = Recorder(trt), Recorder(trt)
    runtime = trt.Runtime(first)
    other = trt.Runtime(second)
    assert other.deserialize_cuda_engine(b"not a plan") is None
    assert second.messages == []  # everything went to the first logger
    assert "differs from one already provided" in first.messages[0][1]
    assert "Magic Tag" in first.messages[-1][1]
    del runtime, first
    assert other.deserialize_cuda_engine(b"not a plan") is None  # TensorRT still uses the freed logger
    assert "dangling pointer" in fake_gpu.knobs.STATE.problems[-1]
    fake_gpu.knobs.STATE.problems.clear()


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
