"""Training on several devices with Keras' own distribution API: data parallel.

    with data_parallel(2):            # 0: every accelerator present; 1: one device, as usual
        model, history = classifier.airbench.fit(...)

Under the JAX backend, keras.distribution.DataParallel keeps a copy of every variable on each
device and splits each batch along its first axis. The training step stays one program over the
global batch (XLA partitions it and inserts the all-reduces), which settles the recipe's two
questions:
- the learning rate is unchanged: the global batch is the recipe's (1024), whatever the number of
  devices; each device takes 1024 / N of it. The batch must divide evenly (airbench's loader
  drops the last partial batch; validation batches are sized to divide too);
- BatchNorm's batch statistics are the global batch's, not each device's (their means are
  all-reduced), which is what the single-device recipe computes: no synchronised-BN layer needed.
So N devices give the weights one device gives, up to the order of floating-point sums
(bench.data_parallel measures the difference). Keras' distribution API trains on JAX only: on
another backend, more than one device is refused with a plain message.
"""

from contextlib import contextmanager


class DevicesUnavailable(RuntimeError):
    """More devices asked for than this machine or backend can train on."""


def training_devices(count=0):
    """The devices to train on: `count` of them (0: every accelerator, else the one CPU)."""
    import keras

    everything = keras.distribution.list_devices()
    accelerators = [d for d in everything if not d.lower().startswith("cpu")]
    if count == 0:
        return accelerators or everything[:1]
    if count > len(everything):
        raise DevicesUnavailable(
            f"{count} devices asked for, {len(everything)} present ({', '.join(everything)}). On a CPU-only "
            "machine, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N virtual devices (JAX backend).")
    return accelerators[:count] if len(accelerators) >= count else everything[:count]


@contextmanager
def data_parallel(count=0):
    """Inside the block, models built and trained are data-parallel over `count` devices."""
    import keras

    if count == 0 and keras.backend.backend() != "jax":
        count = 1  # "every accelerator" where the backend can split a batch; elsewhere one device
    devices = training_devices(count)
    if len(devices) == 1:
        yield devices
        return
    if keras.backend.backend() != "jax":
        raise DevicesUnavailable(f"Training on {len(devices)} devices needs KERAS_BACKEND=jax "
                                 f"(Keras' distribution API); this process runs {keras.backend.backend()}.")
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield devices
    finally:
        keras.distribution.set_distribution(previous)


def device_count():
    """How many devices the current Keras distribution splits a batch over (1: none set)."""
    import keras

    distribution = keras.distribution.distribution()
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)
