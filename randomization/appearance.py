"""Appearance axis: geom and material colours, and texture colours (the skybox is our HDRI stand-in).

Colours get an additive per-channel RGB offset (alpha untouched). A texture's RGB channels are
multiplied by a per-channel gain drawn from ``texture_gain``, starting from the nominal pixels, so
the procedural skybox gradient (and any table/object texture) really changes colour in the image.
``model.tex_data`` lives on the GPU once a renderer exists: after ``reset_model`` the env calls
``Randomizer.upload_textures(model, renderer)`` (a no-op when no texture is randomized).
"""

from __future__ import annotations

import mujoco
import numpy as np

from .config import match, names, uniform

NAME = "appearance"
FIELDS = ("geom_rgba", "mat_rgba", "tex_data")
PARAMS = {
    "geoms": ("regex", ".*"),  # geom names
    "materials": ("regex", ".*"),  # material names
    "textures": ("regex", ".*"),  # texture names; an unnamed texture matches by its type: skybox, 2d, cube
    "rgba_offset": ("offset", [0.0, 0.0]),
    "texture_gain": ("factor", [1.0, 1.0]),
}
_TEX_TYPE = {int(mujoco.mjtTexture.mjTEXTURE_2D): "2d", int(mujoco.mjtTexture.mjTEXTURE_CUBE): "cube",
             int(mujoco.mjtTexture.mjTEXTURE_SKYBOX): "skybox"}


def _texture_names(model) -> list[str]:
    return [n or _TEX_TYPE.get(int(model.tex_type[i]), "") for i, n in enumerate(names(model, mujoco.mjtObj.mjOBJ_TEXTURE, model.ntex))]


def bind(model, scene, cfg):
    geoms = match(cfg["geoms"], names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom), scene.geoms if scene else ())
    # A geom with a material is drawn in the material's colour only while its own rgba keeps MuJoCo's
    # default (0.5 0.5 0.5 1): offsetting it would switch the renderer to that grey. Its colour is
    # randomized through its material instead.
    geoms = [i for i in geoms if model.geom_matid[i] < 0]
    mats = match(cfg["materials"], names(model, mujoco.mjtObj.mjOBJ_MATERIAL, model.nmat))
    # By-reference textures (tex_adr == -1) have no pixels in the model to change.
    texs = [i for i in match(cfg["textures"], _texture_names(model)) if model.tex_adr[i] >= 0]
    if not (geoms or mats or texs):
        return None, "no geom, material or texture matches its pattern"
    return {"geoms": geoms, "materials": mats, "textures": texs,
            "geom_names": names(model, mujoco.mjtObj.mjOBJ_GEOM, model.ngeom),
            "mat_names": names(model, mujoco.mjtObj.mjOBJ_MATERIAL, model.nmat),
            "tex_names": _texture_names(model)}, None


def apply(model, targets, cfg, rng) -> dict:
    geom_off = uniform(rng, cfg["rgba_offset"], (len(targets["geoms"]), 3))
    mat_off = uniform(rng, cfg["rgba_offset"], (len(targets["materials"]), 3))
    gains = uniform(rng, cfg["texture_gain"], (len(targets["textures"]), 3))
    out = {"geoms": {}, "materials": {}, "textures": {}}
    for j, i in enumerate(targets["geoms"]):
        model.geom_rgba[i, :3] = np.clip(model.geom_rgba[i, :3] + geom_off[j], 0.0, 1.0)
        out["geoms"][targets["geom_names"][i] or f"geom{i}"] = model.geom_rgba[i].tolist()
    for j, i in enumerate(targets["materials"]):
        model.mat_rgba[i, :3] = np.clip(model.mat_rgba[i, :3] + mat_off[j], 0.0, 1.0)
        out["materials"][targets["mat_names"][i] or f"material{i}"] = model.mat_rgba[i].tolist()
    for j, i in enumerate(targets["textures"]):
        nc = int(model.tex_nchannel[i])
        size = int(model.tex_width[i] * model.tex_height[i]) * nc
        adr = int(model.tex_adr[i])
        pixels = model.tex_data[adr : adr + size].reshape(-1, nc).astype(np.float32)
        pixels[:, :3] = np.clip(pixels[:, :3] * gains[j][: min(3, nc)], 0, 255)
        model.tex_data[adr : adr + size] = np.rint(pixels).astype(np.uint8).ravel()
        out["textures"][targets["tex_names"][i] or f"texture{i}"] = {"gain": gains[j].tolist()}
    return out
