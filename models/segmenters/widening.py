"""Widening a trained U-Net without changing what it computes (Net2WiderNet, Chen et al., ICLR 2016).

A wider network costs more per image but may hold more than a narrow one learns. Trained from scratch,
it would need the narrow one's whole CPU budget again (hours); widened from it, it starts from the
same function and only the added capacity has to learn. Every stage of the wider U-Net keeps the old
channels and adds copies of randomly chosen old ones; a layer that reads a copied channel divides the
old input weight equally between the copies, so the sum it computes is unchanged and the wider
network's logits equal the narrow one's, in training mode too (copies have equal batch statistics).

Exact copies would stay copies under AdamW: each copy's gradient is the same, and even unequal
shares of the outgoing weight would only scale it, which Adam's per-weight normalisation cancels.
Noise on the copies' own weights (``noise``) parts them, at the price of an approximate start.

The appearance features for merging (the last decoder stage and the bottleneck) are the one output
that does change: the copied channels appear twice in them.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNet, _DoubleConv

__all__ = ["widen_unet"]


class _ChannelCopies:
    """Which old channel each channel of a widened stage copies, and the share of the old channel's
    outgoing weight each copy carries (one over the number of copies)."""

    def __init__(self, old: int, new: int, generator: torch.Generator) -> None:
        self.old = old
        extra = torch.randint(old, (new - old,), generator=generator)
        self.source = torch.cat([torch.arange(old), extra])
        self.share = 1.0 / torch.bincount(self.source, minlength=old)[self.source].float()


def _copy_rows(tensor: torch.Tensor, copies: _ChannelCopies, noise: float,
               generator: torch.Generator) -> torch.Tensor:
    """Per-output-channel ``tensor`` widened: row ``j`` is old row ``copies.source[j]``, the copies'
    rows with noise of ``noise`` × the tensor's spread."""
    rows = tensor[copies.source]
    if noise:
        is_copy = torch.arange(len(copies.source)) >= tensor.shape[0]
        rows[is_copy] += noise * tensor.std() * torch.randn(rows[is_copy].shape, generator=generator)
    return rows


def _split_inputs(weight: torch.Tensor, inputs: list[_ChannelCopies]) -> torch.Tensor:
    """A conv weight (out, in, kh, kw) over the concatenation of widened inputs: each part's old input
    channels, read through its copies and scaled by their shares."""
    parts = []
    offset = 0
    for copies in inputs:
        part = weight[:, offset:offset + copies.old]
        parts.append(part[:, copies.source] * copies.share[None, :, None, None])
        offset += copies.old
    return torch.cat(parts, dim=1)


def _widen_batch_norm(norm: nn.BatchNorm2d, target: nn.BatchNorm2d, copies: _ChannelCopies) -> None:
    """Scale, shift and running statistics of each copy are its source channel's."""
    for name, tensor in norm.state_dict().items():
        target.state_dict()[name].copy_(tensor if tensor.dim() == 0 else tensor[copies.source])


def _widen_double_conv(block: _DoubleConv, target: _DoubleConv, inputs: list[_ChannelCopies],
                       middle: _ChannelCopies, output: _ChannelCopies, noise: float,
                       generator: torch.Generator) -> None:
    """conv → BN → ReLU → conv → BN → ReLU, widened: the first conv reads ``inputs``, its output
    stage is widened by ``middle`` and the block's output by ``output``."""
    conv1, norm1, _, conv2, norm2, _ = block
    target[0].weight.copy_(_copy_rows(_split_inputs(conv1.weight, inputs), middle, noise, generator))
    _widen_batch_norm(norm1, target[1], middle)
    target[3].weight.copy_(_copy_rows(_split_inputs(conv2.weight, [middle]), output, noise, generator))
    _widen_batch_norm(norm2, target[4], output)


@torch.no_grad()
def widen_unet(model: UNet, width: int, noise: float = 0.0, seed: int = 0) -> UNet:
    """A U-Net of ``width`` that computes what ``model`` computes (exactly with ``noise`` 0).

    Args:
        model: the trained U-Net (left unchanged).
        width: channels of the first stage of the wider network, at least ``model``'s; every stage
            doubles it, as in the narrow one.
        noise: standard deviation of Gaussian noise added to the copied channels' incoming weights,
            relative to each layer's weight spread; 0 keeps the function exact (and the copies copies).
        seed: seed of the choice of channels copied and of the noise.
    """
    depth = len(model.down)
    old_width = model.stem[0].out_channels
    if width < old_width:
        raise ValueError(f"a U-Net of width {old_width} cannot be widened to {width}")
    generator = torch.Generator().manual_seed(seed)
    wide = UNet(num_regions=model.num_regions, width=width, depth=depth)

    def copies(level: int) -> _ChannelCopies:
        return _ChannelCopies(old_width * 2**level, width * 2**level, generator)

    rgb = _ChannelCopies(3, 3, generator)
    stage = [copies(0)]  # each encoder stage's output: the skip connections and the bottleneck
    _widen_double_conv(model.stem, wide.stem, [rgb], copies(0), stage[0], noise, generator)
    for level, (block, target) in enumerate(zip(model.down, wide.down), start=1):
        stage.append(copies(level))
        _widen_double_conv(block, target, [stage[level - 1]], copies(level), stage[level], noise, generator)
    below = stage[depth]
    for level, block, target in zip(reversed(range(depth)), model.up, wide.up):
        output = copies(level)  # the decoder reads cat([skip, upsampled]) (unet._Up)
        _widen_double_conv(block.conv, target.conv, [stage[level], below], copies(level), output, noise, generator)
        below = output
    wide.head.weight.copy_(_split_inputs(model.head.weight, [below]))
    wide.head.bias.copy_(model.head.bias)
    return wide
