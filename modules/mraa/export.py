"""ONNX export of the MRAA region predictor and generator (pixel-wise flow + generator, MRAA Sec. 3.1-3.2).

`python -m modules.export --config config/mraa/vox256.yaml ...` (`modules/export.py`) writes

- `region_predictor.onnx`: image (B, 3, H, W) -> shift (B, K, 2), affine (B, K, 2, 2), covar (B, K, 2, 2);
- `generator.onnx`: source (B, 3, H, W), driving_shift, driving_affine, driving_covar, source_shift,
  source_affine, source_covar -> prediction (B, 3, H, W);

batch dimension dynamic. The closed-form 2x2 eigen-decomposition exports as elementary ops (the published
`torch.svd` would not). ONNX (opset 17) has no matrix inverse, `hypot` or `diag_embed`: while exporting,
`export_symbolics` maps them to elementary ops (the 2x2 inverse as adjugate / determinant, which is what
a 2x2 `torch.inverse` computes up to rounding). The choice of region parameters (standard, relative with
its convex hull, the AVD network) stays in the caller.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

OPSET = 17
PARAM_KEYS = ("shift", "affine", "covar")


class RegionPredictorExport(nn.Module):
    """image (B, 3, H, W) -> (shift, affine, covar)."""

    def __init__(self, region_predictor: nn.Module):
        super().__init__()
        self.region_predictor = region_predictor

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params = self.region_predictor(image)
        return params["shift"], params["affine"], params["covar"]


class GeneratorExport(nn.Module):
    """(source, driving shift / affine / covar, source shift / affine / covar) -> prediction (eval semantics)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, source: torch.Tensor, driving_shift: torch.Tensor, driving_affine: torch.Tensor,
                driving_covar: torch.Tensor, source_shift: torch.Tensor, source_affine: torch.Tensor,
                source_covar: torch.Tensor) -> torch.Tensor:
        driving = {"shift": driving_shift, "affine": driving_affine, "covar": driving_covar}
        source_params = {"shift": source_shift, "affine": source_affine, "covar": source_covar}
        return self.generator(source, driving_region_params=driving, source_region_params=source_params)["prediction"]


def _last_size(value) -> int | None:
    """The static size of the last dimension, None when the exporter does not know it."""
    sizes = value.type().sizes() if hasattr(value.type(), "sizes") else None
    return int(sizes[-1]) if sizes and sizes[-1] is not None else None


def _hypot(g, x, y):
    return g.op("Sqrt", g.op("Add", g.op("Mul", x, x), g.op("Mul", y, y)))


def _diag_embed(g, x, offset, dim1, dim2):
    """x (..., n) -> (..., n, n) with x on the diagonal: unsqueeze(x, -1) * I_n (I_n from x's shape: EyeLike)."""
    last = g.op("Constant", value_t=torch.tensor([-1]))
    n = g.op("Gather", g.op("Shape", x), last, axis_i=0)  # [n]
    zeros = g.op("ConstantOfShape", g.op("Concat", n, n, axis_i=0), value_t=torch.tensor([0.0]))  # n x n
    return g.op("Mul", g.op("Unsqueeze", x, last), g.op("EyeLike", zeros))


def _inverse_2x2(g, x):
    """(..., 2, 2) -> its inverse, adjugate / determinant."""
    if _last_size(x) not in (2, None):
        raise RuntimeError("the MRAA export inverts 2x2 matrices only")

    def entry(i: int, j: int):
        row = g.op("Gather", x, g.op("Constant", value_t=torch.tensor(i)), axis_i=-2)  # ... x 2
        return g.op("Gather", row, g.op("Constant", value_t=torch.tensor(j)), axis_i=-1)  # ...

    a, b, c, d = entry(0, 0), entry(0, 1), entry(1, 0), entry(1, 1)
    last, second = g.op("Constant", value_t=torch.tensor([-1])), g.op("Constant", value_t=torch.tensor([-2]))

    def row(p, q):  # ... x 1 x 2
        return g.op("Unsqueeze", g.op("Concat", g.op("Unsqueeze", p, last), g.op("Unsqueeze", q, last), axis_i=-1),
                    second)

    adjugate = g.op("Concat", row(d, g.op("Neg", b)), row(g.op("Neg", c), a), axis_i=-2)  # ... x 2 x 2
    det = g.op("Sub", g.op("Mul", a, d), g.op("Mul", b, c))  # ...
    return g.op("Div", adjugate, g.op("Unsqueeze", g.op("Unsqueeze", det, last), last))


_SYMBOLICS = {"aten::hypot": _hypot, "aten::diag_embed": _diag_embed, "aten::linalg_inv": _inverse_2x2}


@contextlib.contextmanager
def export_symbolics():
    """Register the elementary-op forms of hypot, diag_embed and the 2x2 inverse for one export, then remove them."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    for name, fn in _SYMBOLICS.items():
        register_custom_op_symbolic(name, fn, OPSET)
    try:
        yield
    finally:
        for name in _SYMBOLICS:
            unregister_custom_op_symbolic(name, OPSET)


def export_inputs(models: dict[str, nn.Module], size: int, batch: int) -> dict[str, tuple]:
    """Example inputs of both graphs: random frames and the region predictor's params of them."""
    image = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        params = models["region_predictor"](image)
    values = tuple(params[k] for k in PARAM_KEYS)
    return {"region_predictor": (image,), "generator": (image, *values, *values)}


INPUT_NAMES = {"region_predictor": ["image"],
               "generator": ["source"] + [f"driving_{k}" for k in PARAM_KEYS] + [f"source_{k}" for k in PARAM_KEYS]}
OUTPUT_NAMES = {"region_predictor": list(PARAM_KEYS), "generator": ["prediction"]}


def export_modules(models: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The two export wrappers, eval mode (the exporter restores the wrappers' mode on their children)."""
    return {"region_predictor": RegionPredictorExport(models["region_predictor"]).eval(),
            "generator": GeneratorExport(models["generator"]).eval()}
