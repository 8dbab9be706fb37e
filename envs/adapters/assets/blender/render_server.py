"""A Blender render server that speaks the nondiff bridge protocol (runs inside Blender's own Python).

Started by envs/adapters/blender.py as::

    sh -c 'exec blender -b --factory-startup --python render_server.py -- ARGS 3>&1 1>&2'

Blender prints its banner and render progress to stdout, so the launcher moves the protocol's stdout to
fd 3 and points fd 1 at stderr before Blender starts; this script hands fd 3 to the SDK. Its Python is the
system one (``python3-numpy`` gives it NumPy) with this repository on ``sys.path``.

The scene: a floor (a holdout: it masks nothing and draws nothing, so the alpha channel is the objects'
silhouette), ``objects`` primitives standing on it (kinds ``box``, ``prism``, ``bar`` in turn), a sun and a
camera looking down at 55°. One env instance is one scene; ``step(x)`` renders the normalised parameters
``x = [(x, y, rotation, red, green, blue) × objects, light azimuth, light elevation]`` and returns the
``uint8[size, size, 4]`` RGBA picture (premultiplied over black). ``reset`` renders nothing and returns
zeros. Engines: ``workbench`` (studio light turned with the light azimuth, shadows along the light
direction) or ``cycles`` (the sun; ``samples`` per pixel and a fixed ``seed``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time

import bpy  # type: ignore[import-not-found]  # only inside Blender

try:
    import numpy as np
except ImportError:
    print("render_server: Blender's Python has no NumPy; install it with: apt-get install -y python3-numpy",
          file=sys.stderr, flush=True)
    os._exit(2)

KINDS = ("box", "prism", "bar")
PER_OBJECT = 6  # x, y, rotation, red, green, blue
FLOOR_HALF = 1.5  # the floor is [-1.5, 1.5]² m; positions 0..1 map onto [-POS_HALF, POS_HALF]
POS_HALF = 1.2
ELEVATION = (math.radians(20.0), math.radians(80.0))  # the light's elevation, 0..1 mapped onto this


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="render_server.py")
    p.add_argument("--repo", required=True, help="the nondiff repository (for envs.bridge.sdk)")
    p.add_argument("--fd", type=int, default=1, help="the protocol's output fd (the launcher moves it to 3)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--objects", type=int, default=3)
    p.add_argument("--engine", choices=("workbench", "cycles"), default="workbench")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="render threads; 0: every core")
    p.add_argument("--shm", default="/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                   help="where the PNG of each render goes (default /dev/shm: memory, not disk)")
    p.add_argument("--bench", type=int, default=0, metavar="N",
                   help="no protocol: render N parameter vectors (uniform in [0.1, 0.9], --bench-seed) in a "
                   "loop, print the renders per second as JSON on stderr, and exit")
    p.add_argument("--bench-seed", type=int, default=0)
    return p.parse_args(argv)


def _sweep(folder: str) -> None:
    """Remove the PNGs of render servers that are gone (killed ones cannot remove their own)."""
    for name in os.listdir(folder):
        pid = name.removeprefix("nondiff-blender-").removesuffix(".png")
        if name.startswith("nondiff-blender-") and name.endswith(".png") and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass
            except OSError:  # alive, someone else's
                pass


def _primitive(kind: str) -> bpy.types.Object:
    if kind == "box":
        bpy.ops.mesh.primitive_cube_add(size=0.6, location=(0, 0, 0.3))
    elif kind == "prism":  # a triangular prism: a cylinder of 3 vertices
        bpy.ops.mesh.primitive_cylinder_add(vertices=3, radius=0.45, depth=0.6, location=(0, 0, 0.3))
    else:  # a bar, 1 m long
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0, 0, 0.2), scale=(1.0, 0.36, 0.4))
    return bpy.context.active_object


class Scene:
    """The scene, its parameters and one render (a gym-style env for envs.bridge.sdk.serve)."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.size, self.n = a.size, a.objects
        self.dim = PER_OBJECT * a.objects + 2
        self.observation_space = {"type": "Box", "low": 0, "high": 255, "shape": [a.size, a.size, 4],
                                  "dtype": "uint8"}
        self.action_space = {"type": "Box", "low": 0.0, "high": 1.0, "shape": [self.dim], "dtype": "float64"}
        self.metadata = {"render_fps": 4}
        self.path = os.path.join(a.shm, f"nondiff-blender-{os.getpid()}.png")
        _sweep(a.shm)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        scene = self.scene = bpy.context.scene
        r = scene.render
        r.resolution_x = r.resolution_y = a.size
        r.resolution_percentage = 100
        r.film_transparent = True
        r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGBA"
        r.image_settings.color_depth = "8"
        r.filepath = self.path
        if a.threads > 0:
            r.threads_mode, r.threads = "FIXED", a.threads
        scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
        scene.display_settings.display_device = "sRGB"
        if a.engine == "cycles":
            r.engine = "CYCLES"
            scene.cycles.device, scene.cycles.samples, scene.cycles.seed = "CPU", a.samples, a.seed
            scene.cycles.use_denoising = False
            scene.cycles.use_adaptive_sampling = False
            scene.cycles.max_bounces = 2
        else:
            r.engine = "BLENDER_WORKBENCH"
            shading = scene.display.shading
            shading.light, shading.color_type = "STUDIO", "OBJECT"
            shading.use_world_space_lighting = True
            shading.show_shadows, shading.shadow_intensity = True, 0.6
            shading.show_specular_highlight = False
            scene.display.render_aa = "8"
        world = bpy.data.worlds.new("world")
        world.color = (0.05, 0.05, 0.05)
        scene.world = world
        material = bpy.data.materials.new("object colour")  # Cycles: the Base Color is the object's colour
        material.use_nodes = True
        nodes = material.node_tree.nodes
        info, bsdf = nodes.new("ShaderNodeObjectInfo"), nodes["Principled BSDF"]
        material.node_tree.links.new(info.outputs["Color"], bsdf.inputs["Base Color"])
        bpy.ops.mesh.primitive_plane_add(size=2 * FLOOR_HALF, location=(0, 0, 0))
        self.floor = bpy.context.active_object
        self.floor.is_holdout = True  # Cycles: masks nothing, draws nothing
        self.floor.hide_render = a.engine != "cycles"  # Workbench ignores holdouts
        self.objects = []
        for i in range(a.objects):
            obj = _primitive(KINDS[i % len(KINDS)])
            obj.data.materials.append(material)
            self.objects.append(obj)
        sun = bpy.data.lights.new("sun", "SUN")
        sun.energy = 3.0
        self.sun = bpy.data.objects.new("sun", sun)
        scene.collection.objects.link(self.sun)
        cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
        cam.data.lens = 50.0
        cam.location = (0.0, -3.6, 4.3)
        cam.rotation_euler = (math.radians(40.0), 0.0, 0.0)
        scene.collection.objects.link(cam)
        scene.camera = cam
        self.blank = np.zeros((a.size, a.size, 4), np.uint8)

    def apply(self, x: np.ndarray) -> None:
        """Pose, colour and light the scene from normalised parameters ``x``."""
        x = np.clip(np.asarray(x, dtype=np.float64).reshape(self.dim), 0.0, 1.0)
        for obj, p in zip(self.objects, x[:-2].reshape(self.n, PER_OBJECT)):
            obj.location.x, obj.location.y = ((2 * p[:2] - 1) * POS_HALF).tolist()
            obj.rotation_euler.z = 2 * math.pi * float(p[2])
            obj.color = (*p[3:6].tolist(), 1.0)
        azimuth = 2 * math.pi * float(x[-2])
        elevation = ELEVATION[0] + float(x[-1]) * (ELEVATION[1] - ELEVATION[0])
        toward = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                  math.sin(elevation))  # from the scene toward the light
        self.sun.rotation_euler = (math.pi / 2 - elevation, 0.0, azimuth + math.pi / 2)
        self.scene.display.light_direction = toward
        self.scene.display.shading.studiolight_rotate_z = azimuth - math.pi

    def render(self) -> np.ndarray:
        """One render to the PNG on /dev/shm, read back as ``uint8[size, size, 4]`` (top row first)."""
        bpy.ops.render.render(write_still=True)
        image = bpy.data.images.load(self.path, check_existing=False)
        try:
            px = np.empty(self.size * self.size * 4, np.float32)
            image.pixels.foreach_get(px)
        finally:
            bpy.data.images.remove(image)
        rgba = px.reshape(self.size, self.size, 4)[::-1]
        rgba[..., :3] *= rgba[..., 3:]  # premultiplied: the background is black
        return np.round(rgba * 255).astype(np.uint8)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return self.blank, {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        start = time.perf_counter()
        self.apply(action)
        frame = self.render()
        return frame, 0.0, False, False, {"render_ms": 1000 * (time.perf_counter() - start)}

    def close(self) -> None:
        if os.path.exists(self.path):
            os.remove(self.path)
        # Blender's session directory (/tmp/blender_XXXXXX/): Blender removes it when it quits, but this
        # server ends with os._exit, which skips that (one empty directory per run would pile up in /tmp)
        shutil.rmtree(bpy.app.tempdir, ignore_errors=True)


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    a = _args(argv)
    sys.path.insert(0, a.repo)
    from envs.bridge.sdk import serve

    scene = Scene(a)
    if a.bench > 0:  # the same server driven directly: the baseline of the transport's overhead
        xs = np.random.default_rng(a.bench_seed).uniform(0.1, 0.9, (a.bench, scene.dim))
        start = time.perf_counter()
        for x in xs:
            scene.step(x)
        wall = time.perf_counter() - start
        print(json.dumps({"renders": a.bench, "wall_s": wall, "renders_per_s": a.bench / wall}),
              file=sys.stderr, flush=True)
        scene.close()
        os._exit(0)
    if a.fd != 1:  # the launcher put the protocol on fd 3 and stderr on fd 1: serve() dups fd 1 for itself
        os.dup2(a.fd, 1)  # and points fd 1 back at stderr at once
        os.close(a.fd)
    try:
        serve(scene, name=f"blender-{a.engine}")
    finally:
        scene.close()
        sys.stdout.flush()
        os._exit(0)  # Blender would print "Blender quit" and tear down its UI state; nothing is left to do


main()
