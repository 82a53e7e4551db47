"""Ray Tune sweeps over the robust updater's settings (``zodd tune``): not available yet."""
