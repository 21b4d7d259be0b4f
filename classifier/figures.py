"""Figures written by the build: matplotlib without a screen, saved atomically.

    plt = pyplot()
    figure, axis = plt.subplots()
    save_figure(figure, "assets/figures/curves.png", dpi=100)
"""

from bundle.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg back end (no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path, dpi=100):
    """Write a figure whole (PNG by the suffix), then close it."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=dpi)
    pyplot().close(figure)
    return path
