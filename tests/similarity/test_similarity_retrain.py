"""End to end on real photos: relabel -> file and record -> retraining trains on them."""

import numpy as np

from classifier.data import DataConfig, prepare_dataset
from classifier.images import to_uint8
from classifier.train import TrainConfig
from similarity import FeedbackStore
from similarity.retrain import feedback_images, retrain

CORRECTIONS = {"n02123597_Siamese_cat": "cat", "n02690373_airliner": "airplane", "n03095699_container_ship": "ship"}


def test_relabelled_uploads_join_the_next_training_run(tmp_path, real_photos):
    store = FeedbackStore(tmp_path / "feedback")
    for name, label in CORRECTIONS.items():
        record = store.save(real_photos[name], label, predicted="frog")
        assert (store.root / record.path).exists()
    assert sorted(r.label for r in store.records()) == sorted(CORRECTIONS.values())
    assert len(feedback_images(store.root)) == 3

    data = DataConfig(limit_per_class=20)
    # The retrain's data cache goes to tmp: its key holds the feedback folder's path.
    config = TrainConfig(preset="pets_small", epochs=1, batch_size=64, data=DataConfig(limit_per_class=20, cache_dir=str(tmp_path / "cache")))
    result = retrain(store.root, config, runs_dir=tmp_path / "runs", verbose=0)

    assert (result.run_dir / "model.keras").exists() and result.run_dir.parent == tmp_path / "runs"
    assert result.run_dir.name.startswith("pets_small-feedback-") and result.feedback_images == 3
    assert len(result.history["loss"]) == 1
    baseline = prepare_dataset(data)
    assert np.sum(~result.dataset.train_augmented) == np.sum(~baseline.train_augmented) + 3
    names = result.dataset.class_names
    flat = result.dataset.x_train.reshape(len(result.dataset.x_train), -1)
    for record in store.records():
        pixels = to_uint8((store.root / record.path).read_bytes(), data.preprocessing).reshape(-1)
        rows = np.flatnonzero(np.all(flat == pixels, axis=1))
        assert len(rows) >= 1 and names[result.dataset.y_train[rows[0]]] == record.label

    again = retrain(store.root, config, runs_dir=tmp_path / "runs", verbose=0)
    assert again.run_dir == result.run_dir  # same config and feedback: the finished run is reused
