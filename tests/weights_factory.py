"""Models made by the tests: seeded random ResNet weights in the HDF5 layout of Keras's own ImageNet files,
and a small classifier trained for a few steps on coloured images, as a user's fine-tuned model stands in."""

import numpy as np

CLASSIFIER_LAYER = "predictions"
FEATURE_LAYER = "avg_pool"


def _reference_batch(rng, count=16, v2=False):
    """Smooth random colour fields: varied enough to show what every image's features share."""
    from PIL import Image

    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(rng.integers(2, 9), rng.integers(2, 9), 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(coarse).resize((224, 224), Image.Resampling.BICUBIC)))
    pixels = np.stack(images).astype(np.float32)
    # What each network is fed: tf mode for the v2 models, caffe mode for the others.
    return pixels / 127.5 - 1.0 if v2 else pixels[..., ::-1] - np.float32([103.939, 116.779, 123.68])


def randomize_batch_norms(model, rng):
    """Give every batch norm non-trivial statistics, as trained weights have, so folding them shows."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([
                rng.uniform(0.7, 1.3, channels).astype(np.float32),  # gamma
                rng.normal(0.0, 0.1, channels).astype(np.float32),  # beta
                rng.normal(0.0, 0.1, channels).astype(np.float32),  # moving mean
                rng.uniform(0.7, 1.3, channels).astype(np.float32),  # moving variance
            ])


def build_random_resnet50(seed=1234, logit_std=3.0, shared_directions=2):
    """A ResNet50 with seeded random weights whose classifier tells images apart (build_random_resnet)."""
    return build_random_resnet("resnet50", seed, logit_std, shared_directions)


def build_random_resnet(arch="resnet50", seed=1234, logit_std=3.0, shared_directions=2):
    """Any of Keras's ImageNet ResNets with seeded random weights whose classifier tells images apart.

    A random ResNet gives every image nearly the same pooled features (correlation above 0.9),
    so a random classifier would rank the same classes first for all of them. The classifier
    kernel is drawn at random, then the direction the features share is projected out of it and
    it is scaled so that logits spread with about logit_std: different images get different,
    well-separated top-5s.
    """
    import keras

    keras.utils.set_random_seed(seed)
    from resclassify.archs import ARCHS

    model = getattr(keras.applications, ARCHS[arch].builder)(weights=None)
    rng = np.random.default_rng(seed)
    randomize_batch_norms(model, rng)
    features = np.asarray(keras.Model(model.input, model.get_layer(FEATURE_LAYER).output)(
        _reference_batch(rng, v2=arch.endswith("v2")), training=False))
    # The mean feature and the main directions in which the reference fields vary: what a
    # random network sees in every image alike.
    centred = features - features.mean(axis=0)
    shared = np.vstack([features.mean(axis=0), np.linalg.svd(centred, full_matrices=False)[2][:shared_directions]])
    basis = np.linalg.qr(shared.T)[0]
    dense = model.get_layer(CLASSIFIER_LAYER)
    kernel, bias = dense.get_weights()
    kernel = rng.normal(0.0, 1.0, kernel.shape).astype(np.float32)
    kernel -= basis @ (basis.T @ kernel)
    logits = features @ kernel
    kernel *= logit_std / (logits - logits.mean(axis=1, keepdims=True)).std()
    dense.set_weights([kernel.astype(np.float32), np.zeros_like(bias)])
    return model


COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}


def colour_image(colour, size, rng):
    """A uint8 RGB image of one dominant colour with noise: easy to learn, not constant."""
    noise = rng.integers(-35, 36, size=(size[1], size[0], 3))
    return np.clip(np.asarray(COLOURS[colour]) + noise, 0, 255).astype(np.uint8)


def train_colour_classifier(*, size=64, rescaling=False, softmax=True, seed=0, steps=40):
    """A small Keras CNN trained for a few steps to tell red, green and blue images apart.

    Classes are in COLOURS order. It expects tf-mode input ([-1, 1] RGB), or, with rescaling,
    raw 0..255 pixels that its own first layer rescales.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    labels = rng.integers(0, len(names), size=96)
    pixels = np.stack([colour_image(names[i], (size, size), rng) for i in labels]).astype(np.float32)
    layers = [keras.Input((size, size, 3))]
    if rescaling:
        layers.append(keras.layers.Rescaling(1 / 127.5, offset=-1.0))
    else:
        pixels = pixels / 127.5 - 1.0
    layers += [
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(len(names), activation="softmax" if softmax else None),
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax))
    model.fit(pixels, labels, batch_size=32, epochs=max(1, steps // 3), verbose=0)
    return model


def save_keras_h5_weights(model, path):
    """Write model's weights as keras.applications' *_weights_tf_dim_ordering_tf_kernels.h5 files are laid out.

    Root attributes layer_names, backend, keras_version; a group per layer whose weight_names
    attribute lists datasets named "<layer>/<weight>:0", trainable weights first.
    """
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [f"{layer.name}/{w.name}:0".encode("utf8") for w in weights]
            group.attrs["weight_names"] = np.array(names)
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode("utf8"), data=np.asarray(weight.numpy()))
    return path
