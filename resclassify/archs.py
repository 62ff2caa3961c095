"""The one table of built-in networks: Keras builder, normalization, official weights file, md5, size."""

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Arch:
    """One of Keras's ImageNet ResNets and what goes with it.

    normalization is what its ImageNet weights were trained with: the v1 models use caffe mode
    (BGR, ImageNet mean subtracted), the v2 models scale RGB to [-1, 1] (tf mode). md5 is the
    sum keras.applications checks for the include_top weights file; approx_mib is for listings
    before the file is here (the exact size is not published). blocks is the number of residual
    blocks in stages conv2..conv5, which tells the architectures apart by their layer names.
    """

    name: str
    builder: str  # the keras.applications constructor
    normalization: str
    md5: str
    approx_mib: int
    blocks: tuple

    @property
    def weights_file(self):
        return f"{self.name}_weights_tf_dim_ordering_tf_kernels.h5"

    @property
    def v2(self):
        return self.name.endswith("v2")


ARCHS = {
    a.name: a
    for a in (
        Arch("resnet50", "ResNet50", "caffe", "2cb95161c43110f7111970584f804107", 98, (3, 4, 6, 3)),
        Arch("resnet101", "ResNet101", "caffe", "f1aeb4b969a6efcfb50fad2f0c20cfc5", 171, (3, 4, 23, 3)),
        Arch("resnet152", "ResNet152", "caffe", "100835be76be38e30d865e96f2aaae62", 232, (3, 8, 36, 3)),
        Arch("resnet50v2", "ResNet50V2", "tf", "3ef43a0b657b3be2300d5770ece849e0", 98, (3, 4, 6, 3)),
        Arch("resnet101v2", "ResNet101V2", "tf", "6343647c601c52e1368623803854d971", 171, (3, 4, 23, 3)),
        Arch("resnet152v2", "ResNet152V2", "tf", "a49b44d1979771252814e80f8ec446f9", 232, (3, 8, 36, 3)),
    )
}
ARCH_CHOICES = tuple(ARCHS)
DEFAULT_ARCH = "resnet50"
# keras.applications builds its ResNets for any square input from 32x32 up (they are convolutional
# up to their global pooling), with the same weights; 224 is what they were trained at.
MIN_INPUT_SIZE = 32

_BLOCK_NAME = re.compile(r"conv([2-5])_block(\d+)_")
_KERAS3_LAYER = re.compile(r"layers/([a-z0-9]+(?:_[a-z]+)*)(?:_\d+)?$")


def arch_from_weights_names(names):
    """The built-in architecture a weights file holds, from its HDF5 group and dataset names, or None.

    Keras 2's layout (Keras's ImageNet files, model.save_weights("x.h5")) names groups after
    the layers; Keras 3's .weights.h5 names them after the layer classes (layers/conv2d_52),
    so there the number of convolutions and batch norms tells the networks apart.
    """
    return arch_from_layer_names(names) or _arch_from_layer_counts(names)


def _arch_from_layer_counts(names):
    kinds = {}
    for name in names:
        match = _KERAS3_LAYER.match(name)
        if match:
            kinds.setdefault(match.group(1), set()).add(name)
    convolutions, batch_norms = len(kinds.get("conv2d", ())), len(kinds.get("batch_normalization", ()))
    for arch in ARCHS.values():
        depth = sum(arch.blocks)
        # Three convolutions a block, the stem's and four shortcuts; a batch norm after each in
        # v1 (one more for the stem), three a block and a final one in v2.
        if (convolutions, batch_norms) == (3 * depth + 5, 3 * depth + (1 if arch.v2 else 5)):
            return arch.name
    return None


def arch_from_layer_names(names):
    """The built-in architecture whose layer names these are (a weights file's), or None.

    Keras names each residual block's layers convS_blockB_... and only the v2 models have
    pre-activation layers (..._preact_bn) and a final post_bn; the deepest block of each stage
    tells 50, 101 and 152 apart.
    """
    deepest = {}
    v2 = False
    for name in names:
        v2 = v2 or "preact" in name or name.startswith("post_bn") or "/post_bn" in name
        for stage, block in _BLOCK_NAME.findall(name):
            deepest[int(stage)] = max(deepest.get(int(stage), 0), int(block))
    blocks = tuple(deepest.get(stage, 0) for stage in (2, 3, 4, 5))
    if not any(blocks):
        return None
    for arch in ARCHS.values():
        if arch.blocks == blocks and arch.v2 == v2:
            return arch.name
    return None
