"""Pseudo template generator (PTG) of RDDN (paper section IV-B, eqs. 12-14).

One encoder-decoder ``G_i`` per backbone stage. Each has three convolutions and three
transposed convolutions, hidden width ``hidden_dim`` (paper: 256), stride 2 on the last two
convolutions and the first two transposed convolutions, ReLU after every layer except the last;
the output has the stage's channel count. Trained on defect-free images by MSE reconstruction, it
learns to map features to "normal" features, so ``C_i - G_i(C_i)`` keeps what is not normal.

Layer sizes (ours; the paper gives only the list above): 3x3 convolutions (padding 1), 4x4
transposed convolutions with stride 2 (padding 1: exact x2 upsampling) and a final 3x3 one with
stride 1. Inputs whose sides are not multiples of 4 are zero-padded and the output cropped back.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StageGenerator", "PseudoTemplateGenerator"]


class StageGenerator(nn.Module):
    """``G_i``: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int, hidden_dim: int = 256):
        super().__init__()
        h = hidden_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, h, 3, stride=1, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(h, h, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(h, h, 4, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(h, channels, 3, stride=1, padding=1),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h, w = x.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        # traced (tools/export_model.py): always pad, by the traced amounts (0 is a no-op), so that the branch is
        # not frozen at the tracing size
        if torch.jit.is_tracing() or ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        y = self.decoder(self.encoder(x))
        return y[..., :h, :w]


class PseudoTemplateGenerator(nn.Module):
    """
    ``{stage: G_stage}`` over the backbone stages that FPN reads.

    Args:
        in_channels (dict[str, int]): stage name (e.g. "res2") -> channels C_i.
        hidden_dim (int): width of every hidden layer.
    """

    def __init__(self, in_channels: Dict[str, int], hidden_dim: int = 256):
        super().__init__()
        if not in_channels:
            raise ValueError("PseudoTemplateGenerator needs at least one stage")
        self.generators = nn.ModuleDict({k: StageGenerator(c, hidden_dim) for k, c in in_channels.items()})

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """features: {stage: (N, C_i, H_i, W_i)} -> {stage: G_i(C_i)} for the generator's stages."""
        return {k: g(features[k]) for k, g in self.generators.items()}

    def residual(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``C_i - G_i(C_i)`` (eq. 14) for the generator's stages; other entries pass unchanged."""
        out = dict(features)
        for k, g in self.generators.items():
            out[k] = features[k] - g(features[k])
        return out

    def reconstruction_loss(self, features: Dict[str, torch.Tensor], detach: bool = True) -> torch.Tensor:
        """
        ``sum_i mean((C_i^N - G_i(C_i^N))^2)`` over the stages, for features of NORMAL images only
        (eq. 13 with the MSE the paper trains with). ``detach``: the features are constants, so
        only ``G`` receives this gradient. Returns a 0-dim tensor.
        """
        total = 0.0
        for k, g in self.generators.items():
            c = features[k].detach() if detach else features[k]
            total = total + F.mse_loss(g(c), c)
        return total
