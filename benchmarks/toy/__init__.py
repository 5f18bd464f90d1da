"""The bundled toy model: a tiny class-conditional DiT trained on procedural shapes.

It carries the paper's experiment where no real model can be downloaded: same sampler
family (Euler flow matching with CFG), same cache runtime as the ComfyUI integration.
"""
