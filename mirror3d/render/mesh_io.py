"""Mesh files (OBJ + MTL + PNG, GLB, PLY) through trimesh, keeping per-corner UVs and textures.

Conventions: UVs are per face corner, ``face_uvs`` (F, 3, 2) in [0, 1] with v pointing up
(OpenGL / OBJ convention: v = 1 is the top row of the texture image, row 0). Textures are
(3, H, W) float tensors in [0, 1] or H x W x 3 uint8 arrays, row 0 at the top. trimesh stores
UVs in the same convention and converts to glTF's v-down convention itself when writing GLB.

Per-corner UVs need per-vertex UVs in the files, so vertices on UV seams are split into one copy
per distinct (vertex, uv) pair: the first copy keeps the original index and the extra copies are
appended after the V original vertices. ``load_mesh`` merges vertices with identical positions
again (``merge_seams=True``), so a mesh written by ``export_mesh`` comes back with its original
vertex count, order and faces.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

__all__ = ["MeshData", "export_mesh", "load_mesh", "split_uv_seams"]

_SUFFIXES = (".obj", ".glb", ".ply")


@dataclass
class MeshData:
    """A mesh read from a file.

    Attributes:
        verts: (V, 3) float32.
        faces: (F, 3) int64.
        face_uvs: (F, 3, 2) float32 per-corner UVs (v up), or None.
        texture: (3, H, W) float32 in [0, 1] (row 0 = top), or None.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    face_uvs: torch.Tensor | None = None
    texture: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# input conversion and validation
# --------------------------------------------------------------------------------------------


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _check_verts_faces(verts, faces) -> tuple[np.ndarray, np.ndarray]:
    v = _to_numpy(verts, "verts")
    if v.ndim != 2 or v.shape[-1] != 3:
        raise ValueError(f"verts must have shape (V, 3), got {tuple(v.shape)}")
    if not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"verts must be floating point, got dtype {v.dtype}")
    if not np.isfinite(v).all():
        raise ValueError("verts contains NaN or infinite coordinates")
    f = _to_numpy(faces, "faces")
    if f.ndim != 2 or f.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(f.shape)}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be an integer array, got dtype {f.dtype}")
    if f.shape[0] == 0:
        raise ValueError("faces is empty; expected at least one triangle")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(
            f"faces indexes vertices outside [0, {v.shape[0]}) (min {int(f.min())}, max {int(f.max())})"
        )
    return v.astype(np.float64), f.astype(np.int64)


def _check_face_uvs(face_uvs, num_faces: int) -> np.ndarray:
    uv = _to_numpy(face_uvs, "face_uvs")
    if uv.shape != (num_faces, 3, 2):
        raise ValueError(f"face_uvs must have shape ({num_faces}, 3, 2), got {tuple(uv.shape)}")
    if not np.issubdtype(uv.dtype, np.floating):
        raise ValueError(f"face_uvs must be floating point, got dtype {uv.dtype}")
    if not np.isfinite(uv).all():
        raise ValueError("face_uvs contains NaN or infinite values")
    return uv


def _texture_to_uint8(texture) -> np.ndarray:
    """(3, H, W) float in [0, 1] (clipped) or (H, W, 3) uint8 -> (H, W, 3) uint8."""
    t = _to_numpy(texture, "texture")
    if t.dtype == np.uint8:
        if t.ndim != 3 or t.shape[-1] != 3 or t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"texture as uint8 must have shape (H, W, 3), got {tuple(t.shape)}")
        return np.ascontiguousarray(t)
    if np.issubdtype(t.dtype, np.floating):
        if t.ndim != 3 or t.shape[0] != 3 or t.shape[1] == 0 or t.shape[2] == 0:
            raise ValueError(f"texture as float must have shape (3, H, W), got {tuple(t.shape)}")
        if not np.isfinite(t).all():
            raise ValueError("texture contains NaN or infinite values")
        return np.ascontiguousarray(
            np.round(np.clip(t.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
        )
    raise ValueError(f"texture must be float (3, H, W) in [0, 1] or uint8 (H, W, 3), got dtype {t.dtype}")


# --------------------------------------------------------------------------------------------
# seams
# --------------------------------------------------------------------------------------------


def split_uv_seams(
    faces: np.ndarray, face_uvs: np.ndarray, num_verts: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Turn per-corner UVs into per-vertex UVs by splitting vertices with several UVs.

    Every distinct (vertex, uv) pair becomes one output vertex. The pair that occurs first for
    vertex v keeps index v; further pairs get indices V, V+1, ... in order of first occurrence.
    Vertices no face uses keep their index with uv (0, 0).

    Args:
        faces: (F, 3) int.
        face_uvs: (F, 3, 2) float.
        num_verts: V.

    Returns:
        src (V',) index of the original vertex of every output vertex, uv (V', 2), and
        new_faces (F, 3) into the output vertices.
    """
    corner_v = faces.reshape(-1).astype(np.int64)
    corner_uv = np.ascontiguousarray(face_uvs.reshape(-1, 2).astype(np.float64))
    corner_uv = corner_uv + 0.0  # -0.0 -> 0.0, so equal values have equal bits
    keys = np.column_stack([corner_v, corner_uv.view(np.int64)])  # exact (vertex, u, v) identity
    uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    uniq_vert = uniq[:, 0]
    uniq_uv = uniq[:, 1:].copy().view(np.float64)

    by_occurrence = np.argsort(first, kind="stable")  # unique pairs in order of first use
    _, first_pos = np.unique(uniq_vert[by_occurrence], return_index=True)
    primary = np.zeros(len(uniq), dtype=bool)
    primary[by_occurrence[first_pos]] = True
    extras = by_occurrence[~primary[by_occurrence]]

    new_id = np.empty(len(uniq), dtype=np.int64)
    new_id[primary] = uniq_vert[primary]
    new_id[extras] = num_verts + np.arange(len(extras))

    total = num_verts + len(extras)
    src = np.empty(total, dtype=np.int64)
    src[:num_verts] = np.arange(num_verts)
    src[new_id] = uniq_vert
    uv = np.zeros((total, 2), dtype=np.float64)
    uv[new_id] = uniq_uv
    new_faces = new_id[inverse].reshape(-1, 3)
    return src, uv, new_faces


def _merge_identical_positions(
    verts: np.ndarray, faces: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices with exactly equal positions, keeping the first occurrence's order."""
    uniq, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return verts[first[order]], rank[inverse][faces]


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def _temp_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _write_all(files: dict[Path, bytes]) -> None:
    """Write every file under a temporary name, then rename them all (the first key last).

    On failure the temporary files and any files already renamed by this call are removed, so
    no partial set (e.g. a texture without its mesh) is left behind.
    """
    temps: dict[Path, Path] = {}
    renamed: list[Path] = []
    try:
        for final, data in files.items():
            tmp = _temp_name(final)
            temps[final] = tmp
            with open(tmp, "wb") as fh:
                fh.write(data)
        for final in list(files)[::-1]:
            os.replace(temps[final], final)
            renamed.append(final)
    except BaseException:
        for final in renamed:
            final.unlink(missing_ok=True)
        raise
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def export_mesh(path, verts, faces, face_uvs=None, texture=None) -> Path:
    """Write a mesh file chosen by the suffix of ``path``.

    - ``.obj``: OBJ + ``<stem>.mtl`` + ``<stem>.png`` next to it (``vt`` per split vertex, faces
      ``f v/vt``), so the UVs and texture survive a re-import.
    - ``.glb``: binary glTF with the texture embedded (PNG) and the UVs intact.
    - ``.ply``: geometry only (``face_uvs`` and ``texture`` are ignored).

    Files are written under temporary names and renamed at the end, so a failure leaves no
    partial file.

    Args:
        path: output file, suffix .obj, .glb or .ply.
        verts: (V, 3) float, torch or numpy.
        faces: (F, 3) int.
        face_uvs: (F, 3, 2) per-corner UVs in [0, 1], v up, or None.
        texture: (3, H, W) float in [0, 1] (clipped) or (H, W, 3) uint8, or None; needs
            ``face_uvs``.

    Returns:
        The path of the mesh file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"path must end with one of {', '.join(_SUFFIXES)}, got {str(path)!r}")
    v, f = _check_verts_faces(verts, faces)
    uv = _check_face_uvs(face_uvs, f.shape[0]) if face_uvs is not None else None
    image = _texture_to_uint8(texture) if texture is not None else None
    if image is not None and uv is None:
        raise ValueError("texture was given without face_uvs; a texture needs per-corner UVs")

    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".ply" or uv is None:
        mesh = trimesh.Trimesh(vertices=v, faces=f, process=False, maintain_order=True)
    else:
        src, vert_uv, new_faces = split_uv_seams(f, uv, v.shape[0])
        material = trimesh.visual.material.SimpleMaterial(
            image=Image.fromarray(image) if image is not None else None,
            diffuse=(255, 255, 255, 255),
            name=re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "material",
        )
        mesh = trimesh.Trimesh(
            vertices=v[src],
            faces=new_faces,
            visual=trimesh.visual.TextureVisuals(uv=vert_uv, material=material),
            process=False,
            maintain_order=True,
        )

    if suffix == ".obj":
        mtl_name = f"{mesh.visual.material.name}.mtl" if uv is not None else None
        text, extra = trimesh.exchange.obj.export_obj(
            mesh, include_normals=False, include_color=False, return_texture=True, mtl_name=mtl_name
        )
        files = {path: text.encode("utf-8")}
        for name, data in extra.items():
            files[path.with_name(name)] = data
    elif suffix == ".glb":
        files = {path: mesh.export(file_type="glb")}
    else:
        files = {path: mesh.export(file_type="ply", encoding="binary")}
    _write_all(files)
    return path


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def _material_image(material):
    if material is None:
        return None
    for attr in ("baseColorTexture", "image"):
        img = getattr(material, attr, None)
        if img is not None:
            return img
    return None


def load_mesh(path, merge_seams: bool = True) -> MeshData:
    """Read an .obj / .glb / .ply mesh (texture and UVs included when present).

    Args:
        path: mesh file.
        merge_seams: merge vertices with identical positions (undoes the seam splitting of
            ``export_mesh``; per-corner UVs are unaffected).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read as a triangle mesh.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {str(path)!r}")
    bad = f"could not read {str(path)!r} as a mesh; expected a mesh file (.obj/.glb/.ply)"
    if path.suffix.lower() not in _SUFFIXES:
        raise ValueError(bad)
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False, maintain_order=True)
    except Exception as exc:  # trimesh raises many kinds of errors on bad files
        raise ValueError(f"{bad} ({type(exc).__name__}: {exc})") from exc
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), dtype=np.int64)
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if faces.ndim != 2 or faces.shape[0] == 0 or verts.shape[0] == 0:
        raise ValueError(f"{bad} (no triangles found)")

    face_uvs = None
    texture = None
    visual = getattr(mesh, "visual", None)
    vert_uv = getattr(visual, "uv", None)
    if vert_uv is not None and len(vert_uv) == len(verts):
        face_uvs = np.asarray(vert_uv, dtype=np.float64)[faces]
        image = _material_image(getattr(visual, "material", None))
        if image is not None:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            texture = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)

    if merge_seams:
        verts, faces = _merge_identical_positions(verts, faces)
    return MeshData(
        verts=torch.from_numpy(verts.astype(np.float32)),
        faces=torch.from_numpy(faces.astype(np.int64)),
        face_uvs=None if face_uvs is None else torch.from_numpy(face_uvs.astype(np.float32)),
        texture=texture,
    )
