"""A convolutional network on the picture that a problem's features begin with (``blackbox.amortised_net:
cnn``).

An MLP on a flattened picture must learn each place on it separately: an object seen at one pixel teaches it
nothing about the next. Convolutions share their weights across the picture, so what is learned about a
shape holds wherever it stands. Two channels of normalised x and y coordinates are added to the picture's
own (CoordConv: Liu et al., "An intriguing failing of convolutional neural networks and the CoordConv
solution", NeurIPS 2018), so that the network can still read where a shape stands, which is what it must
answer. The feature maps are flattened, not pooled (pooling would throw the places away), and joined with
the features after the picture (e.g. shape moments) and the context for a fully connected head.
"""

from __future__ import annotations

import torch
from torch import nn

from agents.blackbox.common import Standardiser, mlp

CHANNELS = (32, 32, 64)
"""Output channels of the 3 × 3 convolutions; the first keeps the picture's size (halves it from 32 pixels
up), each later one halves it."""


class ConvInverse(nn.Module):
    """``inputs → outputs`` where ``inputs`` are standardised features (the picture first, ``H·W·C`` values
    row-major with channels last, then ``n_extra`` more: the rest of the features and the context).

    Args:
        image: the picture's ``(height, width, channels)``.
        n_extra: how many inputs follow the picture.
        hidden: the fully connected head's hidden sizes.
        n_out: outputs.
    """

    def __init__(self, image: tuple[int, int, int], n_extra: int, hidden: list[int], n_out: int) -> None:
        super().__init__()
        h, w, c = image
        self.image = (h, w, c)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        self.coords: torch.Tensor
        self.register_buffer("coords", torch.stack([xs, ys])[None])
        layers: list[nn.Module] = []
        c_in = c + 2
        for i, c_out in enumerate(CHANNELS):
            stride = 2 if i > 0 or min(h, w) > 16 else 1
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
            c_in, h, w = c_out, (h + stride - 1) // stride, (w + stride - 1) // stride
        self.conv = nn.Sequential(*layers)
        self.n_pixels = image[0] * image[1] * image[2]
        self.head = mlp(c_in * h * w + n_extra, hidden, n_out)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Outputs for a batch of input rows."""
        h, w, c = self.image
        pic = inputs[:, : self.n_pixels].reshape(len(inputs), h, w, c).permute(0, 3, 1, 2)
        pic = torch.cat([pic, self.coords.expand(len(inputs), -1, -1, -1)], dim=1)
        return self.head(torch.cat([self.conv(pic).flatten(1), inputs[:, self.n_pixels:]], dim=1))


def tie_channels(norm: Standardiser, inputs: torch.Tensor, image: tuple[int, int, int]) -> None:
    """Give the picture's entries of a fitted standardiser one mean and std per channel, over all pixels.

    Per entry, a pixel that an object rarely covers has a tiny std and is blown up where one does (up to
    128 standard deviations on Blender's bank), and an object reads differently at each place: the
    convolutions' shared weights need one scale for the whole picture.
    """
    h, w, c = image
    pic = inputs[:, : h * w * c].reshape(-1, c)
    norm.mean[: h * w * c] = pic.mean(0).repeat(h * w)
    norm.std[: h * w * c] = pic.std(0).clamp_min(1e-6).repeat(h * w)
