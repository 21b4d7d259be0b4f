"""Isolation forests on the CNN's features: one per class (the OOD stage's default candidate) or one for all.

    detector = ClassIsolationForests(n_classes=13).fit(train_features, train_labels)
    detector.calibrate(val_features, val_labels, tpr=0.95).predict(features, predicted_classes)
"""

import numpy as np

from bundle.arrays import l2_normalize
from ood.detectors import OODDetector


class ClassIsolationForests(OODDetector):
    """One scikit-learn IsolationForest per class; the forest of the predicted class scores a sample.

    Features are L2-normalized, then projected on their `n_components` principal axes (fitted on
    all classes' training features, each class weighing the same) plus the length of what the
    projection leaves out. Random
    axis-aligned cuts isolate far better in those few dense directions than in 256 raw ones, and
    the residual catches images whose features point where no training image's did.

    Each class's forest is kept as its fitted trees packed into flat arrays (forests_, one
    PackedForest per class): the same scores as IsolationForest.score_samples, about a hundred
    times faster for one image. Only the packed trees are kept, so a fitted and a loaded detector
    hold the same state (a third of the file scikit-learn's tree pickles would make, and no
    dependence on their format).

    Fitted state: forests_, mean_, components_, thresholds_, classes_, n_classes_,
    n_features_in_, tpr_.
    """

    def __init__(self, n_estimators=200, max_samples=256, normalize=True, n_components=32, residual=True,
                 min_class_samples=20, n_classes=None, random_state=0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.normalize = normalize
        self.n_components = n_components
        self.residual = residual
        self.min_class_samples = min_class_samples
        self.n_classes = n_classes
        self.random_state = random_state

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        x = self._fit_projection(features, labels)
        seeds = class_seeds(self.random_state, self.n_classes_)
        # A class too rare to fit its own forest (tiny smoke-test data) borrows one fitted on all.
        shared = None
        self.forests_ = []
        for label in self.classes_:
            rows = x[labels == label]
            if len(rows) >= self.min_class_samples:
                self.forests_.append(PackedForest(_isolation_forest(rows, self.n_estimators, self.max_samples, seeds[label])))
            else:
                if shared is None:
                    shared = PackedForest(_isolation_forest(x, self.n_estimators, self.max_samples, seeds[label]))
                self.forests_.append(shared)
        return self._finish_fit(features, labels)

    def _fit_projection(self, features, labels):
        z = l2_normalize(features) if self.normalize else features.astype(np.float32)
        # Every class weighs the same in the principal axes: the CIFAR-10 classes have about twice
        # the training images of our extra ones, and axes fitted on the raw mix detected worse.
        groups = [z[labels == label].astype(np.float64) for label in np.unique(labels)]
        self.mean_ = np.mean([group.mean(axis=0) for group in groups], axis=0).astype(np.float32)
        self.components_ = None
        if self.n_components:
            scatter = sum((g - self.mean_).T @ (g - self.mean_) / len(g) for g in groups) / len(groups)
            _, axes = np.linalg.eigh(scatter)  # ascending eigenvalues
            self.components_ = axes[:, ::-1][:, : self.n_components].T.astype(np.float32)
        return self._project(z)

    def _prepare(self, features):
        return self._project(l2_normalize(features) if self.normalize else features)

    def _project(self, z):
        if self.components_ is None:
            return z
        centred = z - self.mean_
        projected = centred @ self.components_.T
        if not self.residual:
            return projected
        left_out = np.linalg.norm(centred - projected @ self.components_, axis=1, keepdims=True)
        return np.hstack([projected, left_out]).astype(np.float32)

    def _score(self, features, classes):
        x = self._prepare(features)
        scores = np.empty(len(x))
        for label in np.unique(classes):
            rows = classes == label
            scores[rows] = self.forests_[label].score_samples(x[rows])
        return scores


class GlobalIsolationForest(ClassIsolationForests):
    """One IsolationForest on every class together (a baseline), same features; thresholds
    stay per class."""

    def fit(self, features, labels):
        features, labels = self._start_fit(features, labels)
        forest = _isolation_forest(self._fit_projection(features, labels), self.n_estimators, self.max_samples,
                                   class_seeds(self.random_state, 1)[0])
        self.forests_ = [PackedForest(forest)]
        return self._finish_fit(features, labels)

    def _score(self, features, classes):
        return self.forests_[0].score_samples(self._prepare(features))


def class_seeds(random_state, count):
    """One integer seed per class from an int, a RandomState or None (scikit-learn's convention):
    an int gives the seeds random_state + class, as the shipped detectors were fitted."""
    if isinstance(random_state, (int, np.integer)):
        return [int(random_state) + label for label in range(count)]
    from sklearn.utils import check_random_state

    return check_random_state(random_state).randint(0, 2**31 - 1, size=count).tolist()


def _isolation_forest(x, n_estimators, max_samples, random_state):
    from sklearn.ensemble import IsolationForest

    if n_estimators < 1 or max_samples < 1:
        raise ValueError(f"n_estimators and max_samples must be at least 1, not {n_estimators} and {max_samples}.")
    forest = IsolationForest(n_estimators=n_estimators, max_samples=min(max_samples, len(x)), random_state=random_state)
    return forest.fit(x)


class PackedForest:
    """A fitted IsolationForest's trees as flat arrays, walked for all trees at once with numpy.

    Leaves point to themselves, so every sample can take the same number of steps.
    """

    def __init__(self, forest):
        features, thresholds, left, right, leaf_values, roots = [], [], [], [], [], []
        offset = 0
        for tree, used in zip(forest.estimators_, forest.estimators_features_):
            t = tree.tree_
            nodes = np.arange(t.node_count)
            leaf = t.children_left == -1
            # Trees fitted on a feature subset index into it; with all features they index X.
            mapping = np.asarray(used) if len(used) != forest.n_features_in_ else np.arange(forest.n_features_in_)
            features.append(np.where(leaf, 0, mapping[np.maximum(t.feature, 0)]))
            thresholds.append(t.threshold)
            left.append(np.where(leaf, nodes, t.children_left) + offset)
            right.append(np.where(leaf, nodes, t.children_right) + offset)
            leaf_values.append(_node_depths(t) + average_path_length(t.n_node_samples))
            roots.append(offset)
            offset += t.node_count
        # int32 indices: a third of the file that intp would make, and numpy indexes with them alike.
        self.feature = np.concatenate(features).astype(np.int32)
        self.threshold = np.concatenate(thresholds)
        self.left = np.concatenate(left).astype(np.int32)
        self.right = np.concatenate(right).astype(np.int32)
        self.leaf_value = np.concatenate(leaf_values)
        self.roots = np.array(roots, dtype=np.int32)
        self.steps = max(tree.tree_.max_depth for tree in forest.estimators_)
        self.normalizer = len(self.roots) * average_path_length(np.array([forest.max_samples_]))[0]

    def score_samples(self, x, chunk=2048):
        """IsolationForest.score_samples: -2 ** (-mean path length / c(max_samples))."""
        x = np.asarray(x, dtype=np.float32)
        out = np.empty(len(x))
        for start in range(0, len(x), chunk):
            part = x[start : start + chunk]
            rows = np.arange(len(part))[:, None]
            node = np.broadcast_to(self.roots, (len(part), len(self.roots)))
            for _ in range(self.steps):
                go_left = part[rows, self.feature[node]] <= self.threshold[node]
                node = np.where(go_left, self.left[node], self.right[node])
            depths = self.leaf_value[node].sum(axis=1)
            # As scikit-learn: a forest of one-sample trees has mean depth ratio 1.
            ratio = depths / self.normalizer if self.normalizer else 1.0
            out[start : start + chunk] = -(2.0 ** -ratio)
        return out


def _node_depths(tree):
    """Edges from the root to each node, climbing all nodes towards the root in step."""
    parent = np.full(tree.node_count, -1)
    for children in (tree.children_left, tree.children_right):
        inner = np.flatnonzero(children != -1)
        parent[children[inner]] = inner
    depths, current = np.zeros(tree.node_count), np.arange(tree.node_count)
    for _ in range(tree.max_depth):
        up = parent[current] != -1
        depths += up
        current = np.where(up, parent[current], current)
    return depths


def average_path_length(n_samples):
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n items."""
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.where(n == 2, 1.0, 0.0)
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out
