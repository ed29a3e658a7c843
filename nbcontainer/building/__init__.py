"""Making images from containers: ``build`` (a Containerfile subset, with a layer cache) and
``commit``. Above the runtime (they run containers) and :mod:`nbcontainer.images` (they store
layers); nothing below imports them."""
