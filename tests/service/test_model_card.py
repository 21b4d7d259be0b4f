"""The Model tab's text, from real bundles' metrics: the shipped one and a grayscale one."""

from service.bundle import Bundle
from bundle.images import Preprocessing
from service.model_card import model_card_markdown


def test_the_shipped_bundles_card_has_accuracy_ood_errors_and_the_ladder(cnn_bundle):
    card = model_card_markdown(cnn_bundle)
    classifier = cnn_bundle.metrics["classifier"]
    assert f"| CIFAR-10 test, 10-class accuracy | {classifier['cifar10_test_accuracy_10_class']:.1%} |" in card
    assert "| All 13 classes, whole test split |" in card
    assert "Lanczos resize, a JPEG round trip at quality 75" in card
    assert "near ood AUROC" in card and "far ood AUROC" in card
    near = cnn_bundle.metrics["ood"]["table"][cnn_bundle.metrics["ood"]["chosen"]]["near_ood"]["auroc_by_id_group"]
    assert f"against the extra classes' test pictures alone: {near['extra_classes_test']:.3f}" in card
    assert f"correlate less than {cnn_bundle.noise_gate.threshold_:.2f} is refused" in card
    errors = cnn_bundle.metrics["errors"]
    assert f"{errors['misclassified']} of {errors['test_images']} test images are misclassified" in card
    assert "## Model ladder" in card and "| fastnet |" in card


def test_a_bundle_on_another_dataset_gets_its_own_rows(tmp_path, cnn_bundle):
    # The shipped model's folder with another dataset's metrics: the card reads only the metrics.
    bundle = Bundle(directory=tmp_path, cnn=cnn_bundle.cnn, class_names=tuple("0123456789"),
                    preprocessing=Preprocessing(height=28, width=28, channels=1), manifest={},
                    metrics={"classifier": {"test_accuracy": 0.9876},
                             "ood": {"table": {"mahalanobis": {"tiny_imagenet_val": {"auroc": 0.9998, "fpr_at_95_tpr": 0.0004},
                                                                "id_refusal_rate": 0.06}}, "chosen": "mahalanobis"}})
    card = model_card_markdown(bundle)
    assert "| All 10 classes, whole test split | 98.8% |" in card
    assert "CIFAR-10" not in card and "13 classes" not in card
    assert "tiny imagenet val AUROC / FPR@95" in card and "| mahalanobis | 1.000 / 0.00 | 6.0% |" in card
    assert "Model ladder" not in card
    assert "Input: 28×28, grayscale, Lanczos resize, pixels scaled to [0, 1]." in card
