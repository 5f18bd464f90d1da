"""The ComfyUI runtime adapter: the one budget resolver, installation on a clone, the per-call run, block patches, the family registry."""
