"""The shared contract every architecture keeps, then V2's initialisation, `bisenet info` and
build_model's errors. Checkpoint compatibility is in test_load_model.py, the V1 ImageNet
backbone in test_backbone.py.

Inputs stay small (64x96, batch 2) so the file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import os
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bisenet
from bisenet.cli import main as cli_main
from model_helpers import BATCH, SIZE, calibrate_bn, eval_bn_train_heads, make_input, max_rel_diff  # tests/ is on sys.path


# ============================================================================ contract
class ModelContract:
    """The behaviour every model promises; subclass once per architecture."""

    arch: str
    num_aux: int

    def make_model(self, num_classes: int = 19, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return bisenet.build_model(self.arch, num_classes)

    def test_attributes(self):
        model = self.make_model()
        assert model.num_classes == 19
        assert len(model.aux_heads) == self.num_aux
        assert set(model.aux_heads) <= set(model.head_modules)
        names = {name for name, _ in model.named_children()}
        assert set(model.head_modules) <= names

    def test_train_outputs(self):
        model = self.make_model().train()
        outputs = model(make_input())
        assert isinstance(outputs, tuple)
        assert len(outputs) == 1 + self.num_aux
        for out in outputs:
            assert out.shape == (BATCH, 19, *SIZE)
            assert out.dtype == torch.float32
            assert torch.isfinite(out).all()
            assert out.requires_grad

    def test_low_resolution_outputs_upsample_to_the_train_outputs(self):
        # upsample=False (what training uses) returns each head's logits at its own stride;
        # bilinear upsampling to the input size gives exactly the default outputs.
        model = self.make_model().train()
        x = make_input()
        torch.manual_seed(3)  # same dropout masks in both passes
        full = model(x)
        torch.manual_seed(3)
        low = model(x, upsample=False)
        assert len(low) == len(full)
        for a, b in zip(low, full):
            assert a.shape[-2] < SIZE[0] and SIZE[0] % a.shape[-2] == 0
            up = F.interpolate(a, size=SIZE, mode="bilinear", align_corners=False)
            torch.testing.assert_close(up, b, rtol=1e-4, atol=1e-4)

    def test_eval_output(self):
        model = self.make_model().eval()
        x = make_input()
        with torch.no_grad():
            out = model(x)
        assert isinstance(out, torch.Tensor)
        assert out.shape == (BATCH, 19, *SIZE)
        assert torch.isfinite(out).all()
        # The eval output is the main head of the train-mode tuple (BN/dropout deterministic).
        with torch.no_grad():
            main = eval_bn_train_heads(model)(x)[0]
        torch.testing.assert_close(out, main)

    def test_backward(self):
        model = self.make_model().train()
        # Zero-initialised BN weights would block the gradient of the layers behind them;
        # open them so that every parameter must receive a non-zero gradient.
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.ones_(module.weight)
        x = make_input()
        target = torch.randint(0, 19, (BATCH, *SIZE), generator=torch.Generator().manual_seed(1))
        outputs = model(x)
        loss = sum(F.cross_entropy(out, target) for out in outputs)
        loss.backward()
        assert torch.isfinite(loss)
        bn_params = {
            id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()
        }
        zero_bn = []
        for name, param in model.named_parameters():
            assert param.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
            if id(param) not in bn_params:
                assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
            elif param.grad.abs().sum() == 0:
                zero_bn.append(name)
        # A BN shift feeding a 1x1 conv + train-mode BN on a 1x1 map (V2's context embedding)
        # gets an exactly-zero gradient by construction: that BN removes any batch-constant shift.
        assert len(zero_bn) <= 1, zero_bn

    def test_aux_heads_get_gradient_from_aux_loss_only(self):
        model = self.make_model().train()
        main, *aux = model(make_input())
        sum(out.mean() for out in aux).backward()
        for head in model.aux_heads:
            grads = [p.grad for p in getattr(model, head).parameters()]
            assert all(g is not None and g.abs().sum() > 0 for g in grads), head

    @pytest.mark.parametrize(("size", "padded"), [((65, 96), "96x96"), ((64, 100), "64x128"), ((48, 48), "64x64")])
    @pytest.mark.parametrize("train", [True, False])
    def test_odd_sizes_rejected(self, size, padded, train):
        model = self.make_model().train(train)
        with pytest.raises(ValueError, match=padded) as info:
            model(torch.zeros(1, 3, *size))
        assert "32" in str(info.value)

    def test_state_dict_round_trip(self, tmp_path):
        model = calibrate_bn(self.make_model(seed=1))
        with torch.no_grad():
            for param in model.parameters():  # move every weight away from its init
                param.add_(torch.randn_like(param) * 0.01)
        path = tmp_path / "weights.pth"
        torch.save(model.state_dict(), path)
        restored = self.make_model(seed=2)
        restored.load_state_dict(torch.load(path, weights_only=True))
        restored.eval()
        x = make_input()
        with torch.no_grad():
            assert torch.equal(model(x), restored(x))
            for a, b in zip(eval_bn_train_heads(model)(x), eval_bn_train_heads(restored)(x)):
                assert torch.equal(a, b)

    def test_other_num_classes(self):
        model = self.make_model(num_classes=7)
        assert model.num_classes == 7
        outputs = model.train()(make_input())
        assert len(outputs) == 1 + self.num_aux
        assert all(out.shape == (BATCH, 7, *SIZE) for out in outputs)
        with torch.no_grad():
            assert model.eval()(make_input()).shape == (BATCH, 7, *SIZE)

    def test_channels_last_matches_contiguous(self):
        model = calibrate_bn(self.make_model())
        x = make_input()
        with torch.no_grad():
            expected = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
        assert out.shape == expected.shape
        assert max_rel_diff(out, expected) < 1e-4

    def test_bf16_autocast_cpu(self):
        model = calibrate_bn(self.make_model())
        x = make_input()
        with torch.no_grad():
            expected = model(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                # The logits' dtype is whatever autocast gives the final bilinear upsampling.
                probe = F.interpolate(torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16), scale_factor=2, mode="bilinear")
        assert out.dtype == probe.dtype
        assert out.shape == (BATCH, 19, *SIZE)
        assert torch.isfinite(out).all()
        agreement = (out.float().argmax(1) == expected.argmax(1)).float().mean().item()
        assert agreement > 0.85, f"bf16 and fp32 argmax agree on only {agreement:.1%} of pixels"
        # Autocast in train mode too: every output finite and at input resolution.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model.train()(x)
        assert len(outputs) == 1 + self.num_aux
        assert all(o.shape == (BATCH, 19, *SIZE) and torch.isfinite(o).all() for o in outputs)

    def test_batch_size_one_train(self):
        """Batch 1 in train mode fails with an error that names the fix.

        The 1x1 global-context features leave one value per channel for BatchNorm; PyTorch's
        own 'Expected more than 1 value per channel' is not an error a user can act on.
        """
        model = self.make_model().train()
        with pytest.raises(ValueError, match="needs a batch of at least 2 images per process; raise the batch size"):
            model(make_input(batch=1))

    def test_batch_size_one_eval(self):
        model = self.make_model().eval()
        with torch.no_grad():
            out = model(make_input(batch=1))
        assert out.shape == (1, 19, *SIZE)


class TestBiSeNetV1(ModelContract):
    arch = "bisenetv1"
    num_aux = 2


class TestBiSeNetV2(ModelContract):
    arch = "bisenetv2"
    num_aux = 4



# ============================================================================ V2 initialisation
def test_v2_initialisation():
    torch.manual_seed(0)
    model = bisenet.build_model("bisenetv2", 19)
    zero_bn = re.compile(r"^segment\.(S3|S4|S5_4)\.\d+\.conv2\.1$")
    n_zero = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach()
            fan_out = w.shape[0] * w[0, 0].numel()
            if w.numel() >= 256:
                expected = (2.0 / fan_out) ** 0.5
                assert abs(w.std().item() / expected - 1) < 0.25, (name, w.std().item(), expected)
                assert abs(w.mean().item()) < 0.25 * expected, name
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, nn.BatchNorm2d):
            expected_weight = 0.0 if zero_bn.match(name) else 1.0
            n_zero += expected_weight == 0.0
            assert torch.all(module.weight == expected_weight), name
            assert torch.count_nonzero(module.bias) == 0, name
            assert torch.count_nonzero(module.running_mean) == 0 and torch.all(module.running_var == 1), name
    assert n_zero == 2 + 2 + 4  # one per GE layer in S3, S4, S5_4



@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_up2_conv3x3_equals_upsampling_then_conv_values_and_gradients(channels_last):
    from bisenet.models.layers import nearest_up2_conv3x3

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 6, 7, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(3, 5, 3, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(3, generator=gen, dtype=torch.float64)
    grad = torch.randn(2, 3, 12, 14, generator=gen, dtype=torch.float64)
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    fast = nearest_up2_conv3x3(*inputs)
    fast.backward(grad)
    ref_inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    ref = F.conv2d(F.interpolate(ref_inputs[0], scale_factor=2, mode="nearest"), ref_inputs[1], ref_inputs[2], padding=1)
    ref.backward(grad)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(inputs, ref_inputs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def test_nearest_up_conv_bn_relu_keeps_the_plain_sequentials_keys_and_output():
    from bisenet.models.layers import ConvBNReLU, NearestUp, NearestUpConvBNReLU

    torch.manual_seed(0)
    fused = NearestUpConvBNReLU(8, 4).double()
    plain = nn.Sequential(NearestUp(2), ConvBNReLU(8, 4, 3)).double()
    assert list(fused.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 8, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(fused(x), plain(x))  # train mode: batch statistics
    torch.testing.assert_close(fused.eval()(x), plain.eval()(x))


def test_use_textbook_blocks_keeps_weights_and_outputs():
    from bisenet.models.layers import FastDropout, NearestUpConvBNReLU, use_textbook_blocks

    model = bisenet.build_model("bisenetv2", num_classes=19)
    textbook = use_textbook_blocks(calibrate_bn(bisenet.build_model("bisenetv2", num_classes=19)))
    model.load_state_dict(textbook.state_dict())
    assert list(model.state_dict()) == list(textbook.state_dict())
    assert not any(isinstance(m, (FastDropout, NearestUpConvBNReLU)) for m in textbook.modules())
    assert sum(isinstance(m, NearestUpConvBNReLU) for m in model.modules()) == 4
    x = make_input()
    with torch.no_grad():
        for a, b in zip(eval_bn_train_heads(model)(x), eval_bn_train_heads(textbook)(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

def test_use_textbook_blocks_swaps_only_the_named_blocks():
    from bisenet.models.layers import FastDropout, NearestUpConvBNReLU, use_textbook_blocks

    def count(model, kind):
        return sum(isinstance(m, kind) for m in model.modules())

    upconv_only = use_textbook_blocks(bisenet.build_model("bisenetv2", num_classes=5), ("upconv",))
    assert count(upconv_only, NearestUpConvBNReLU) == 0 and count(upconv_only, FastDropout) > 0
    dropout_only = use_textbook_blocks(bisenet.build_model("bisenetv2", num_classes=5), ("dropout",))
    assert count(dropout_only, FastDropout) == 0 and count(dropout_only, NearestUpConvBNReLU) == 4
    with pytest.raises(ValueError, match="valid: dropout, upconv"):
        use_textbook_blocks(dropout_only, ("upconvs",))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_dropout_drops_p_keeps_the_layout_and_scales_like_nn_dropout(channels_last):
    from bisenet.models.layers import FastDropout

    x = torch.rand(4, 32, 40, 48) + 1.0  # no zeros, so a zero in the output is a dropped element
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    drop = FastDropout(0.1).train()
    torch.manual_seed(3)
    out = drop(x.requires_grad_())
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.005
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(out[~dropped], x[~dropped] * (65536 / (65536 - 6554)))
    out.sum().backward()
    torch.testing.assert_close(x.grad, (~dropped).float() * (65536 / (65536 - 6554)))
    # the dropped elements are spread evenly, not tied to a channel or a row
    per_channel = dropped.float().mean(dim=(0, 2, 3))
    assert per_channel.min() > 0.07 and per_channel.max() < 0.13
    torch.manual_seed(3)
    assert torch.equal(drop(x.detach()) == 0, dropped)  # the global seed decides the mask
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x) and (FastDropout(1.0).train()(x) == 0).all()
    with pytest.raises(ValueError, match="between 0 and 1"):
        FastDropout(1.5)


# ============================================================================ info / build_model
@pytest.mark.parametrize(
    ("arch", "numbers"),
    [
        ("bisenetv2", ("3,358,627", "5,231,487", "49.2")),
        ("bisenetv1", ("13,275,539", "13,425,721", "59.2")),
    ],
)
def test_info_cli(arch, numbers, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, os.cpu_count() or 1))  # one 512x1024 forward: use every core
    try:
        code = cli_main(["info", "--arch", arch, "--num-classes", "19", "--size", "512x1024"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    assert arch in out and "512x1024" in out
    for number in numbers:
        assert number in out, f"{number} not in:\n{out}"


def test_build_model_unknown_arch_lists_valid():
    with pytest.raises(ValueError) as info:
        bisenet.build_model("bisenetv3", 19)
    message = str(info.value)
    assert "bisenetv3" in message and "bisenetv1" in message and "bisenetv2" in message


@pytest.mark.parametrize("num_classes", [0, -3, 2.5])
def test_build_model_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        bisenet.build_model("bisenetv2", num_classes)


def test_build_model_refuses_bad_arguments_with_config_errors() -> None:
    # ConfigError is a BisenetError (the CLI prints one line) and a ValueError (what Python callers catch).
    from bisenet.errors import BisenetError, ConfigError

    assert issubclass(ConfigError, BisenetError) and issubclass(ConfigError, ValueError)
    with pytest.raises(ConfigError, match=r"unknown arch 'bisenetv3' \(did you mean 'bisenetv2'\?\)"):
        bisenet.build_model("bisenetv3", 5)
    for bad in (0, "5", True):
        with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
            bisenet.build_model("bisenetv2", bad)
