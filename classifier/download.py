"""The official CIFAR-10, CIFAR-100 and MNIST for users who are online, fetched with keras.datasets
and laid out as their archives unpack, so that a download and a local copy build alike.

    download_official("data/official")   # -> cifar-10-batches-py/, cifar-100-python/, mnist.npz

Offline it fails at once with classifier.readers.DataUnavailable and a plain message.
"""

import pickle
import socket
from pathlib import Path

import numpy as np

from bundle.atomic import atomic_path
from classifier.dataset import CIFAR100_PICKLES, CIFAR10_PICKLES
from bundle.labels import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR10_CLASSES
from classifier.readers import DataUnavailable, load_keras_dataset

DOWNLOAD_HOSTS = ("www.cs.toronto.edu", "storage.googleapis.com")  # CIFAR, MNIST


def download_official(folder, connect_timeout=5.0):
    """Fetch the three datasets into `folder` (skipping what is there); returns the folder."""
    folder = Path(folder)
    wanted = [folder / CIFAR10_PICKLES / "test_batch", folder / CIFAR100_PICKLES / "test", folder / "mnist.npz"]
    if all(path.exists() for path in wanted):
        return folder
    for host in DOWNLOAD_HOSTS:
        try:
            socket.create_connection((host, 443), timeout=connect_timeout).close()
        except OSError as error:
            raise DataUnavailable(
                f"--download needs the network and {host} cannot be reached ({type(error).__name__}). "
                "Copy the official CIFAR folders to a machine folder and use --cifar-dir instead.") from None
    (x_train, y_train), (x_test, y_test) = load_keras_dataset("cifar10")
    _write_cifar10(folder / CIFAR10_PICKLES, x_train, y_train.ravel(), x_test, y_test.ravel())
    fine = load_keras_dataset("cifar100", "fine")
    coarse = load_keras_dataset("cifar100", "coarse")
    _write_cifar100(folder / CIFAR100_PICKLES, fine, coarse)
    (mx_train, my_train), (mx_test, my_test) = load_keras_dataset("mnist")
    with atomic_path(folder / "mnist.npz") as temporary:
        np.savez_compressed(temporary, x_train=mx_train, y_train=my_train, x_test=mx_test, y_test=my_test)
    return folder


def _rows(x):
    """(n, 32, 32, 3) -> the pickles' (n, 3072) channel-first rows."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), -1))


def _pickle(path, value):
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            pickle.dump(value, handle)


def _write_cifar10(folder, x_train, y_train, x_test, y_test):
    _pickle(folder / "batches.meta", {b"label_names": [name.encode() for name in CIFAR10_CLASSES]})
    for index in range(5):
        part = slice(index * 10000, (index + 1) * 10000)
        _pickle(folder / f"data_batch_{index + 1}", {b"data": _rows(x_train[part]), b"labels": y_train[part].tolist()})
    _pickle(folder / "test_batch", {b"data": _rows(x_test), b"labels": y_test.tolist()})


def _write_cifar100(folder, fine, coarse):
    _pickle(folder / "meta", {b"fine_label_names": [n.encode() for n in CIFAR100_FINE_CLASSES],
                              b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_CLASSES]})
    for split, (x, y_fine), (_, y_coarse) in (("train", fine[0], coarse[0]), ("test", fine[1], coarse[1])):
        _pickle(folder / split, {b"data": _rows(x), b"fine_labels": y_fine.ravel().tolist(),
                                 b"coarse_labels": y_coarse.ravel().tolist()})
