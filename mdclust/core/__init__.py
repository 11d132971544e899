"""Infrastructure the stages share: the store, its journal and lock, images, encoders."""
