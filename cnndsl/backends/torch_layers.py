"""The layers torch.nn lacks, written against `torch` and `nn` alone.

cnndsl.backends.torch_source copies the source of the ones a network uses into the
generated file, so keep every definition here self-contained: no other imports, no
module-level helpers, nothing but `torch` and `nn`.
"""

import torch
from torch import nn


def named(**layers: nn.Module) -> nn.Sequential:
    """An nn.Sequential whose layers keep the given names, in keyword order."""
    seq = nn.Sequential()
    for name, layer in layers.items():
        seq.add_module(name, layer)
    return seq


def center_crop(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Crop x's spatial dims to those of ref, keeping the centre (U-Net's copy and crop;
    an odd surplus leaves the extra row/column at the end)."""
    index = [slice(None), slice(None)]
    for n, m in zip(x.shape[2:], ref.shape[2:]):
        start = (n - m) // 2
        index.append(slice(start, start + m))
    return x[tuple(index)]


def zero_pad(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pad x's spatial dims with zeros to those of ref, centred (an odd gap puts the
    extra zero at the end)."""
    pads = []
    for n, m in zip(reversed(x.shape[2:]), reversed(ref.shape[2:])):
        pads += [(m - n) // 2, m - n - (m - n) // 2]
    return nn.functional.pad(x, pads)


class Maxout(nn.Module):
    """Max over groups of `pieces` consecutive channels (Goodfellow et al. 2013)."""

    def __init__(self, pieces: int) -> None:
        super().__init__()
        self.pieces = pieces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        return x.reshape(n, c // self.pieces, self.pieces, *x.shape[2:]).amax(2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}"


class ZeroPadShortcut(nn.Module):
    """ResNet's option-A shortcut: keep every `stride`-th position, then append zero
    channels up to `out_channels`. No parameters."""

    def __init__(self, stride: int, out_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.dim() - 2
        x = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * spatial]
        return nn.functional.pad(x, [0, 0] * spatial + [0, self.out_channels - x.shape[1]])

    def extra_repr(self) -> str:
        return f"stride={self.stride}, out_channels={self.out_channels}"


class Subsample(nn.Module):
    """LeNet-5's S2/S4: the sum over each kernel-sized window (stride = kernel), times a
    trainable coefficient per channel, plus a trainable bias per channel."""

    def __init__(self, channels: int, kernel_size: tuple[int, ...]) -> None:
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rank = len(self.kernel_size)
        pool = (nn.functional.avg_pool1d, nn.functional.avg_pool2d, nn.functional.avg_pool3d)[rank - 1]
        area = 1
        for k in self.kernel_size:
            area *= k
        shape = (1, -1) + (1,) * rank
        return pool(x, self.kernel_size) * area * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, kernel_size={self.kernel_size}"


class PartialConv(nn.Module):
    """A convolution in which output map j reads only the input maps in table[j]
    (LeNet-5's C3). Only real connections are parameters: weight[c] is the kernel of
    connection c, connections numbered row by row through the table. Each connection is
    applied as a depthwise kernel and summed into its output map, so only real
    connections are computed."""

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: tuple[int, ...]) -> None:
        super().__init__()
        self.table = tuple(tuple(row) for row in table)
        sources = [i for row in self.table for i in row]
        targets = [j for j, row in enumerate(self.table) for _ in row]
        self.weight = nn.Parameter(torch.empty(len(sources), *kernel_size))
        self.bias = nn.Parameter(torch.zeros(len(self.table)))
        self.register_buffer("sources", torch.tensor(sources), persistent=False)
        self.register_buffer("targets", torch.tensor(targets), persistent=False)
        fan_out = len(self.table) * self.weight[0].numel()
        nn.init.normal_(self.weight, 0.0, (2.0 / fan_out) ** 0.5)  # Kaiming, fan_out, as for nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = (nn.functional.conv1d, nn.functional.conv2d, nn.functional.conv3d)[self.weight.dim() - 2]
        per_connection = conv(x[:, self.sources], self.weight.unsqueeze(1), groups=self.weight.shape[0])
        out = per_connection.new_zeros(x.shape[0], self.bias.numel(), *per_connection.shape[2:])
        out = out.index_add(1, self.targets, per_connection)
        return out + self.bias.view(1, -1, *(1,) * (out.dim() - 2))

    def extra_repr(self) -> str:
        return f"{len(self.table)} maps from table {self.table}, kernel_size={tuple(self.weight.shape[1:])}"
