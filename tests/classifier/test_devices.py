"""classifier.devices: data-parallel training on Keras' distribution API, on two virtual CPU
devices (JAX backend, each run in its own process: the backend is chosen at import)."""

import pytest

from bench.data_parallel import compare
from classifier.devices import DevicesUnavailable, data_parallel


def test_two_devices_train_the_weights_one_device_trains():
    pytest.importorskip("jax", reason="JAX (requirements-dev.txt) runs Keras' distribution API")
    difference, largest, facts = compare(devices=2, steps=4, batch=64)
    assert [len(fact["devices"]) for fact in facts] == [1, 2]
    # The same program over the same global batch: only the order of sums differs.
    assert difference < 1e-4 * max(1.0, largest / 10), (difference, largest)


def test_more_devices_than_present_are_refused_plainly():
    with pytest.raises(DevicesUnavailable, match="devices asked for"):
        with data_parallel(64):
            pass
