"""The OpenVINO backend (--backend auto|torch|openvino) on tiny random-weight pipelines, on the CPU.

OpenVINO runs here for real (CPU plugin); only a conversion failure is simulated (patched to raise).
Pixels are compared with the PyTorch path of the same request (DESIGN: OpenVINO <= 2/255).
"""

from __future__ import annotations

import numpy as np
import pytest

openvino = pytest.importorskip("openvino", reason="the openvino package is not installed (pip install sdui[openvino])")

from sdui import samplers  # noqa: E402
from sdui.models import openvino_backend  # noqa: E402
from sdui.types import PREPARING_STAGE, GenerationRequest  # noqa: E402
from tests.test_lora import lora_layers, lora_root  # noqa: E402,F401 - the LoRA files of the LoRA tests


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One disk cache for this module's tests (each tiny model is converted once)."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ov-cache")
        mp.setenv("SDUI_CACHE_DIR", str(path))
        yield path


@pytest.fixture()
def ov_cache(shared_cache):
    return shared_cache


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    """An empty disk cache, so conversions are counted from zero."""
    monkeypatch.setenv("SDUI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def conversions(monkeypatch):
    """Every conversion of a part (UNet, VAE, text encoder), by the name of the function that made it."""
    calls = []

    def counting(name):
        real = getattr(openvino_backend, name)

        def convert(*args):
            calls.append(name)
            return real(*args)
        return convert

    for name in ("convert_unet", "convert_vae", "convert_text_encoder"):
        monkeypatch.setattr(openvino_backend, name, counting(name))
    return calls


def _request(**kw):
    values = dict(prompt="a red cube", steps=3, width=64, height=64, seed=7, save=False, model="tiny", sampler="Euler",
                  watermark=False)
    values.update(kw)
    return GenerationRequest(**values)


def _pixels(result):
    return np.asarray(result.images[0].image.convert("RGB"), dtype=np.int16)


def test_backend_choice_auto_is_openvino_on_cpu_torch_when_asked(make_engine, ov_cache, monkeypatch):
    monkeypatch.delenv("SDUI_AUTO_BACKEND")  # the suite pins auto to PyTorch (conftest); here it means itself
    assert make_engine().status()["backend"] == "OpenVINO"
    assert make_engine(backend="openvino").status()["backend"] == "OpenVINO"
    assert make_engine(backend="torch").status()["backend"] == "PyTorch"


def test_auto_without_the_package_is_torch(make_engine, monkeypatch):
    monkeypatch.delenv("SDUI_AUTO_BACKEND")
    monkeypatch.setattr(openvino_backend, "available", lambda: False)
    engine = make_engine()
    assert engine.status()["backend"] == "PyTorch"
    result = engine.generate(_request())
    assert "Backend:" not in result.images[0].infotext


@pytest.mark.parametrize("sampler", samplers.sampler_names())
def test_openvino_pixels_within_2_of_255_of_pytorch(make_engine, ov_cache, sampler):
    """Every sampler (the issue: the reference-exact sampler tests on both backends)."""
    torch_result = make_engine(backend="torch").generate(_request(sampler=sampler))
    ov_result = make_engine(backend="openvino").generate(_request(sampler=sampler))
    assert "Backend: OpenVINO" in ov_result.images[0].infotext
    assert "Backend:" not in torch_result.images[0].infotext
    diff = np.abs(_pixels(torch_result) - _pixels(ov_result))
    assert diff.max() <= 2, f"{sampler}: max pixel difference {diff.max()}/255"


def test_openvino_unet_vae_and_text_encoder_really_run(make_engine, ov_cache):
    engine = make_engine(backend="openvino")
    engine.generate(_request())
    parts = engine.manager.current.openvino
    assert parts is not None
    assert parts.unet.calls == {"openvino": 3 * 1, "torch": 0}  # 3 steps, CFG batched in one call
    assert parts.decoder.calls == {"openvino": 1, "torch": 0}
    assert parts.text_encoder.calls["openvino"] >= 1 and parts.text_encoder.calls["torch"] == 0
    assert parts.nbytes == sum(p.nbytes for p in (parts.unet, parts.decoder, parts.encoder, parts.text_encoder)) > 0
    # after the job the pipeline holds its PyTorch modules again (other jobs, LoRA, unload see those)
    pipe = engine.manager.current.pipe
    assert pipe.unet is not parts.unet and pipe.text_encoder is not parts.text_encoder
    assert pipe.vae.decoder is parts.decoder.torch_module and pipe.vae.encoder is parts.encoder.torch_module
    # a size that is not a multiple of 64 px (latents the UNet cannot halve evenly) runs on OpenVINO too
    odd = engine.generate(_request(width=72, height=88))
    assert odd.images[0].image.size == (72, 88) and parts.unet.calls["torch"] == 0 and parts.decoder.calls["torch"] == 0
    reference = make_engine(backend="torch").generate(_request(width=72, height=88))
    assert np.abs(_pixels(odd) - _pixels(reference)).max() <= 2


def test_openvino_img2img_encodes_on_openvino_and_matches_pytorch(make_engine, ov_cache):
    from PIL import Image

    gradient = np.linspace(0, 255, 64 * 80 * 3).reshape(80, 64, 3).astype(np.uint8)
    req = dict(mode="img2img", init_image=Image.fromarray(gradient), denoising_strength=0.6, width=64, height=80)
    engine = make_engine(backend="openvino")
    result = engine.generate(_request(**req))
    parts = engine.manager.current.openvino
    assert parts.encoder.calls == {"openvino": 1, "torch": 0}
    reference = make_engine(backend="torch").generate(_request(**req))
    assert np.abs(_pixels(result) - _pixels(reference)).max() <= 2


def test_openvino_clip_skip_reads_the_right_hidden_state(make_engine, ov_cache):
    engine = make_engine(backend="openvino")
    result = engine.generate(_request(clip_skip=2))
    assert engine.manager.current.openvino.text_encoder.calls["torch"] == 0
    reference = make_engine(backend="torch").generate(_request(clip_skip=2))
    assert np.abs(_pixels(result) - _pixels(reference)).max() <= 2
    assert not np.array_equal(_pixels(result), _pixels(make_engine(backend="torch").generate(_request())))


def test_conversion_is_progress_and_the_second_start_does_not_convert(make_engine, fresh_cache, conversions):
    seen = []
    make_engine(backend="openvino").generate(_request(), on_progress=seen.append)
    assert sorted(conversions) == ["convert_text_encoder", "convert_unet", "convert_vae"]
    preparing = [p.step for p in seen if p.stage == PREPARING_STAGE]
    assert preparing and preparing[-1] == 100 and preparing == sorted(preparing)
    assert any(p.stage == "sampling" for p in seen)
    # a new engine (a restart): the IR on disk is used, not converted again, and there is no preparing stage
    again = []
    result = make_engine(backend="openvino").generate(_request(), on_progress=again.append)
    assert len(conversions) == 3 and not [p for p in again if p.stage == PREPARING_STAGE]
    assert "Backend: OpenVINO" in result.images[0].infotext
    for part in ("unet", "vae_decoder", "vae_encoder", "text_encoder"):
        assert list(fresh_cache.glob(f"openvino/*/{part}.xml")), part


def test_simulated_conversion_failure_falls_back_to_pytorch_with_one_warning(make_engine, fresh_cache, monkeypatch,
                                                                             caplog):
    def broken(unet, path):
        raise RuntimeError("simulated: the converter cannot trace this model")

    monkeypatch.setattr(openvino_backend, "convert_unet", broken)
    engine = make_engine(backend="openvino")
    with caplog.at_level("WARNING", logger="sdui.models.manager"):
        result = engine.generate(_request())
        second = engine.generate(_request())
    assert len(result.images) == 1
    assert "Backend:" not in result.images[0].infotext
    assert sum("OpenVINO conversion failed" in w for w in result.warnings) == 1
    assert not any("OpenVINO" in w for w in second.warnings)  # said once, then the model simply runs on PyTorch
    assert sum("OpenVINO conversion" in r.message for r in caplog.records) == 1
    assert engine.status()["backend"] == "PyTorch"
    reference = make_engine(backend="torch").generate(_request())
    assert np.array_equal(_pixels(result), _pixels(reference))


def test_a_lora_job_runs_on_pytorch_with_a_note(lora_root, tmp_path, ov_cache):  # noqa: F811 - the fixture
    from sdui.config import Settings
    from sdui.engine import Engine

    engine = Engine(Settings(models_dir=str(lora_root), outputs_dir=str(tmp_path / "out"), backend="openvino"))
    try:
        with_lora = engine.generate(_request(prompt="a red cube <lora:unet-only:1>"))
        assert any("LoRA: this job ran on PyTorch" in w for w in with_lora.warnings)
        assert "Backend:" not in with_lora.images[0].infotext
        plain = engine.generate(_request())
        assert "Backend: OpenVINO" in plain.images[0].infotext
        reference = Engine(Settings(models_dir=str(lora_root), outputs_dir=str(tmp_path / "out"), backend="torch"))
        lora_reference = reference.generate(_request(prompt="a red cube <lora:unet-only:1>"))
        assert np.array_equal(_pixels(with_lora), _pixels(lora_reference))  # the LoRA really applied, on PyTorch
        assert not np.array_equal(_pixels(with_lora), _pixels(plain))
        reference.manager.release_all()
    finally:
        engine.manager.release_all()


def test_the_pytorch_unet_waits_in_fp16_beside_openvino_and_a_lora_job_gets_it_back_exactly(lora_root, tiny_pipe, tmp_path,  # noqa: F811
                                                                                             ov_cache):
    """An fp16 checkpoint: while OpenVINO runs its UNet, the PyTorch copy is held in fp16 (exact for
    these weights, half the RAM, counted so in the cache); a LoRA job casts it back to fp32 first and
    equals the PyTorch backend's pixels."""
    import shutil

    import torch

    from sdui.config import Settings
    from sdui.engine import Engine
    from tests import tiny

    root = tmp_path / "models"
    shutil.copytree(lora_root, root)
    tiny.save_single_file(tiny_pipe, root / "Stable-diffusion" / "half.safetensors", dtype=torch.float16)
    engine = Engine(Settings(models_dir=str(root), outputs_dir=str(tmp_path / "out"), backend="openvino"))
    reference = Engine(Settings(models_dir=str(root), outputs_dir=str(tmp_path / "out"), backend="torch"))
    try:
        plain = engine.generate(_request(model="half"))
        loaded = engine.manager.current
        assert "Backend: OpenVINO" in plain.images[0].infotext
        assert loaded.pipe.unet.dtype == torch.float16
        unet_fp32 = sum(p.numel() * 4 for p in loaded.pipe.unet.parameters())
        assert loaded.nbytes < devices_bytes_fp32(loaded) - unet_fp32 // 3  # the copy counts at its fp16 size
        tagged = _request(model="half", prompt="a red cube <lora:unet-only:1>")
        with_lora = engine.generate(tagged)
        assert loaded.pipe.unet.dtype == torch.float32
        assert np.array_equal(_pixels(with_lora), _pixels(reference.generate(tagged)))
        assert np.abs(_pixels(plain) - _pixels(reference.generate(_request(model="half")))).max() <= 2
    finally:
        engine.manager.release_all()
        reference.manager.release_all()


def devices_bytes_fp32(loaded) -> int:
    """The model's bytes were every weight fp32, plus its OpenVINO copy."""
    return sum(p.numel() * 4 for c in loaded.pipe.components.values() if hasattr(c, "parameters")
               for p in c.parameters()) + loaded.openvino.nbytes


def test_a_textual_inversion_prompt_encodes_on_pytorch_and_the_rest_stays_on_openvino(make_engine, ov_cache, tmp_path):
    """An embedding's tokens are rows added to the table after conversion: that text goes to the
    PyTorch encoder (same pixels as the PyTorch backend); a prompt without one stays on OpenVINO."""
    import torch

    from tests.test_embeddings import VECTORS, _a1111_dict

    folder = tmp_path / "embeddings"
    folder.mkdir()
    torch.save(_a1111_dict(VECTORS["myembed"]), folder / "myembed.pt")
    engine = make_engine(backend="openvino", embeddings_dir=str(folder))
    with_ti = engine.generate(_request(prompt="a red cube, myembed"))
    parts = engine.manager.current.openvino
    assert parts.text_encoder.calls["torch"] == 1 and parts.unet.calls["torch"] == 0  # the prompt; the negative on OpenVINO
    assert "Backend: OpenVINO" in with_ti.images[0].infotext
    reference = make_engine(backend="torch", embeddings_dir=str(folder)).generate(_request(prompt="a red cube, myembed"))
    assert np.abs(_pixels(with_ti) - _pixels(reference)).max() <= 2
    before = dict(parts.text_encoder.calls)
    plain = engine.generate(_request())  # the table has grown, the checkpoint's own rows are untouched
    assert parts.text_encoder.calls["torch"] == before["torch"]
    assert np.abs(_pixels(plain) - _pixels(make_engine(backend="torch").generate(_request()))).max() <= 2


def test_a_vae_file_decodes_on_pytorch_the_builtin_vae_on_openvino(make_engine, models_root, tmp_path, ov_cache):
    """Only the checkpoint's own VAE is converted: a VAE file chosen instead runs as PyTorch, exactly."""
    from safetensors.torch import save_file

    from tests import tiny

    root = tmp_path / "vae-models"
    root.mkdir()
    (root / "Stable-diffusion").symlink_to(models_root / "Stable-diffusion")
    (root / "VAE").mkdir()
    other = tiny.tiny_pipeline(seed=100).vae
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, root / "VAE" / "other.safetensors")
    engine = make_engine(backend="openvino", models_dir=str(root))
    builtin = engine.generate(_request())
    parts = engine.manager.current.openvino
    assert parts.decoder.calls == {"openvino": 1, "torch": 0}
    chosen = engine.generate(_request(vae="other.safetensors"))
    assert parts.decoder.calls == {"openvino": 1, "torch": 0}  # the stand-in was not put into the other VAE
    reference = make_engine(backend="torch", models_dir=str(root)).generate(_request(vae="other.safetensors"))
    assert np.abs(_pixels(chosen) - _pixels(reference)).max() <= 2
    assert not np.array_equal(_pixels(chosen), _pixels(builtin))
    back = engine.generate(_request(vae="None"))
    assert parts.decoder.calls["openvino"] == 2 and np.array_equal(_pixels(back), _pixels(builtin))


def test_bf16_is_opt_in_and_the_infotext_names_it(make_engine, ov_cache):
    """--openvino-precision bf16: computed in bf16 where the CPU has it natively (else f32, said so), the
    infotext says which; the picture stays close to the f32 one."""
    from sdui.images.infotext import parse_infotext

    native = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    want = "OpenVINO bf16" if native else "OpenVINO"
    engine = make_engine(backend="openvino", openvino_precision="bf16")
    bf16 = engine.generate(_request())
    assert engine.manager.current.openvino.precision == ("bf16" if native else "f32")
    assert parse_infotext(bf16.images[0].infotext)["Backend"] == want
    assert engine.status()["backend"] == want
    f32 = make_engine(backend="openvino").generate(_request())
    assert parse_infotext(f32.images[0].infotext)["Backend"] == "OpenVINO"  # f32 is the default
    assert np.abs(_pixels(bf16) - _pixels(f32)).mean() < 8


def test_a_vae_that_fails_to_convert_stays_on_pytorch_and_the_unet_still_runs_on_openvino(make_engine, fresh_cache,
                                                                                        monkeypatch):
    """One part failing (simulated) costs only that part: one warning, the rest on OpenVINO."""
    def broken(vae, folder):
        raise RuntimeError("simulated: the converter cannot trace this VAE")

    monkeypatch.setattr(openvino_backend, "convert_vae", broken)
    engine = make_engine(backend="openvino")
    result = engine.generate(_request())
    parts = engine.manager.current.openvino
    assert parts.decoder is None and parts.encoder is None and "VAE" in parts.failed
    assert sum("OpenVINO conversion of the VAE failed" in w for w in result.warnings) == 1
    assert parts.unet.calls["openvino"] == 3 and "Backend: OpenVINO" in result.images[0].infotext
    assert engine.manager.current.pipe.vae.decoder.__class__.__name__ == "Decoder"
    reference = make_engine(backend="torch").generate(_request())
    assert np.abs(_pixels(result) - _pixels(reference)).max() <= 2


def test_the_text_encoders_ir_key_ignores_a_table_grown_by_embeddings(tiny_pipe):
    """Embeddings grow the token table and rewrite config.vocab_size; the key is the checkpoint's own."""
    import copy

    te = copy.deepcopy(tiny_pipe.text_encoder)
    rows = openvino_backend.own_vocabulary(tiny_pipe.tokenizer, te)
    before = openvino_backend.part_key("id", "text", te, vocab_size=rows)
    te.resize_token_embeddings(te.get_input_embeddings().weight.shape[0] + 3, mean_resizing=False)
    assert openvino_backend.part_key("id", "text", te, vocab_size=rows) == before
