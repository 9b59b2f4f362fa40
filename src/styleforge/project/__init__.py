"""Projection: find the latent (W or W+) that makes the generator reproduce a given image.

- the perceptual losses it minimises live in :mod:`styleforge.perceptual` (shared with the metrics);
- ``styleforge.project.projector``: the official optimisation (W and W+, several targets per call);
- ``styleforge.project.batch``: files and folders in, per-target output folders out (sharding, resume);
- ``styleforge.project.interpolate``: lerp/slerp between projected latents or seeds.

Import the submodules directly; this file imports nothing so ``import styleforge.project`` stays cheap.
"""
