"""The request layer: who the current shopper is, which cart is theirs, signing them in.

Blueprints share these through plain imports; none imports another blueprint's routes. The
app factory registers the hooks and template globals defined here.
"""
