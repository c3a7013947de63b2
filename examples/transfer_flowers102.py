"""Rep-Net transfer learning on Oxford Flowers-102, ending with a `.tflite`.

Online (downloads the ImageNet weights and the dataset with TensorFlow
Datasets), best on a GPU; not run in CI. The recipe follows the Rep-Net
paper (Sec. 4.1): ImageNet MobileNetV2, 224x224 inputs, Adam with a cosine
decay, batch 8, 50 epochs.

    pip install "keras-repnet[tfds]"
    python examples/transfer_flowers102.py --epochs=50
    python examples/transfer_flowers102.py --dataset=caltech_birds2011
    python examples/transfer_flowers102.py --compare=repnet,tinytl,ft-last,ft-full

Other datasets of the paper in TensorFlow Datasets: `cifar10`, `cifar100`,
`caltech_birds2011` (CUB), `oxford_iiit_pet`, `food101`, `cars196`,
`fgvc_aircraft` (where available in your tfds version).

Writes to `--output_dir`: `model.keras`, the on-device training model
`model.tflite` with its sidecar `model.json`, and with `--compare` the
comparison table and plots (see `keras_repnet.apps.comparison`).
"""

import argparse
import os

import keras

import keras_repnet
from keras_repnet import methods


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="oxford_flowers102",
                        help="A TensorFlow Datasets image classification name.")
    parser.add_argument("--backbone", default="MobileNetV2")
    parser.add_argument("--method", default="repnet", choices=list(methods.METHODS))
    parser.add_argument("--image_size", type=int,
                        help="Defaults to the method's recipe.")
    parser.add_argument("--epochs", type=int, help="Defaults to the recipe's.")
    parser.add_argument("--batch_size", type=int, help="Defaults to the recipe's.")
    parser.add_argument("--output_dir", default="runs/flowers102")
    parser.add_argument("--compare", default="",
                        help="Comma-separated methods to compare first.")
    return parser.parse_args()


def main():
    args = parse_args()
    data = f"tfds:{args.dataset}"
    # The method's recipe (rates, schedule, label smoothing, run defaults),
    # with what the command line changes.
    recipe = methods.recipe_for(args.method).replace(
        image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size
    )
    keras.utils.set_random_seed(recipe.seed)
    if args.compare:
        keras_repnet.compare(
            data,
            backbone=args.backbone,
            weights="imagenet",
            methods=args.compare.split(","),
            output_dir=os.path.join(args.output_dir, "compare"),
            image_size=recipe.image_size,
            epochs=recipe.epochs,
            batch_size=recipe.batch_size,
        )

    # 1. Data: decoded once, resized, augmented (random crop and flip) and
    # preprocessed for the backbone.
    splits = keras_repnet.data.load(
        data,
        recipe=recipe,
        preprocess=keras_repnet.data.preprocessing_for(args.backbone),
    )
    print(f"{splits.num_train} training and {splits.num_validation} "
          f"validation images, {splits.num_classes} classes.")

    # 2. The model: a frozen ImageNet backbone and what the method trains;
    # it keeps the recipe (saved with it, read by the export).
    size = recipe.image_size
    model = methods.build_method(
        args.method,
        args.backbone,
        splits.num_classes,
        input_shape=(size, size, 3),
        weights="imagenet",
        recipe=recipe,
    )
    if args.method.startswith("repnet"):
        keras_repnet.describe(model)

    # 3. Train with the model's recipe (the one given, with what `build`
    # resolves for the backbone): its optimizer, schedule and loss.
    model.recipe.compile(model, total_steps=recipe.epochs * len(splits.train))
    model.fit(splits.train, validation_data=splits.validation, epochs=recipe.epochs)

    # 4. Evaluate and save.
    _, accuracy = model.evaluate(splits.validation, verbose=0)
    print(f"Validation accuracy of {args.method}: {accuracy:.4f}")
    os.makedirs(args.output_dir, exist_ok=True)
    model.save(os.path.join(args.output_dir, "model.keras"))

    # 5. Export a .tflite that keeps training on the device (see tflite/),
    # with the same recipe: the phone optimises the loss Keras optimised.
    path = keras_repnet.export_tflite(
        model,
        os.path.join(args.output_dir, "model.tflite"),
        class_names=splits.class_names,
    )
    print(f"Wrote {path} and its sidecar .json.")


if __name__ == "__main__":
    main()
