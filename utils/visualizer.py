"""Image grids for TensorBoard and demos: source, driving, keypoints, prediction, occlusion masks."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def keypoint_colors(n: int) -> torch.Tensor:
    """n distinct RGB colours (hue wheel, like matplotlib's gist_rainbow)."""
    hue = torch.linspace(0, 5 / 6, n).view(n, 1)
    k = (torch.tensor([5.0, 3.0, 1.0]).view(1, 3) + hue * 6) % 6
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)  # n x 3


def draw_keypoints(images: torch.Tensor, kp: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Draw keypoints (B, N, 2) in [-1, 1] as small squares on images (B, 3, H, W)."""
    out = images.detach().clone().float().cpu()
    b, _, h, w = out.shape
    colors = keypoint_colors(kp.shape[1])
    pix = ((kp.detach().float().cpu() + 1) / 2 * torch.tensor([w - 1, h - 1])).round().long()  # B x N x 2
    for i in range(b):
        for j in range(kp.shape[1]):
            x, y = int(pix[i, j, 0]), int(pix[i, j, 1])
            x0, x1, y0, y1 = max(0, x - radius), min(w, x + radius + 1), max(0, y - radius), min(h, y + radius + 1)
            if x0 < x1 and y0 < y1:
                out[i, :, y0:y1, x0:x1] = colors[j].view(3, 1, 1)
    return out


def training_grid(source: torch.Tensor, driving: torch.Tensor, generated: dict, max_rows: int = 4) -> torch.Tensor:
    """Rows of [source+kp, driving+kp, deformed, prediction, occlusion masks...] as one (3, H', W') image."""
    n = min(max_rows, source.shape[0])
    h, w = source.shape[2:]
    def points(kp: dict) -> torch.Tensor:  # TPSMM keypoints under 'fg_kp', FOMM's under 'value'
        return kp["fg_kp"] if "fg_kp" in kp else kp["value"]

    def frames(images: torch.Tensor, key: str) -> torch.Tensor:  # with the keypoints drawn when there are some
        if key in generated:
            return draw_keypoints(images[:n], points(generated[key])[:n])
        return images[:n].detach().float().cpu().clamp(0, 1)

    cols = [frames(source, "kp_source"), frames(driving, "kp_driving")]
    for key in ("deformed", "prediction"):
        if key in generated:
            cols.append(generated[key][:n].detach().float().cpu().clamp(0, 1))
    occlusion = generated.get("occlusion_map")
    if occlusion is None:
        occlusion = []
    elif torch.is_tensor(occlusion):  # FOMM: one map
        occlusion = [occlusion]
    for occ in occlusion:
        occ = F.interpolate(occ[:n].detach().float().cpu(), size=(h, w), mode="nearest")
        cols.append(occ.expand(-1, 3, -1, -1))
    rows = torch.cat(cols, dim=3)  # n x 3 x H x (cols*W)
    return torch.cat(list(rows), dim=1)  # 3 x (n*H) x (cols*W)
