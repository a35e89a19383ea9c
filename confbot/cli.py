"""The `confbot` command line."""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from confbot.errors import ConfbotError, ConfigError
from confbot.hardware import cpu_info

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="confbot: a sentiment bot for video calls.")
model_app = typer.Typer(no_args_is_help=True, help="Train, evaluate and export the emotion model.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks.")
app.add_typer(model_app, name="model")
app.add_typer(bench_app, name="bench")

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings TOML.")]
TtaOpt = Annotated[Optional[str], typer.Option(
    help="Test-time augmentation: none, flip or ten-crop (default: the setting model.tta).")]
TtaMarginOpt = Annotated[Optional[float], typer.Option(
    help="Run the views beyond the first only for faces whose two best scores are closer than "
         "this; 1: every face (default: the setting model.tta_margin).")]
# Options of the commands that write an export (export, precise-bn, average).
NameOpt = Annotated[str, typer.Option(help="Base name of the files.")]
BnDataOpt = Annotated[Path, typer.Option(
    help="Training faces (.npz) to re-estimate the batch-norm statistics on.")]
BnFacesOpt = Annotated[int, typer.Option(
    help="Re-estimate on this many training faces, drawn at random (0: all of them).")]
BnLowResOpt = Annotated[float, typer.Option(
    help="Share of those faces shrunk to 16-32 px and scaled back first, as training's "
         "low_res_prob does: give a model trained on small faces that setting's value.")]
TRAINING_FACES = Path("../shared/datasets/fer2013/training.npz")


def _settings(config: Path | None, *, tta: str | None = None,
              tta_margin: float | None = None) -> Any:
    """The settings from `config` (and the environment), with `--tta` and `--tta-margin`
    applied if given."""
    from confbot.config import load_settings, validate_settings

    settings = load_settings(config)
    if tta is None and tta_margin is None:
        return settings
    model = dataclasses.replace(
        settings.model, tta=settings.model.tta if tta is None else tta,
        tta_margin=settings.model.tta_margin if tta_margin is None else tta_margin)
    settings = dataclasses.replace(settings, model=model)
    validate_settings(settings)
    return settings


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


@model_app.command("train")
def model_train(
    out: Annotated[Path, typer.Option(help="Run directory: checkpoints, history, run.json.")],
    config: Annotated[Optional[Path], typer.Option(help="Training TOML (see training.toml).")] = None,
    resume: Annotated[bool, typer.Option(help=(
        "Continue the run in --out from its last checkpoint. The schedule and budget may change; "
        "the network, augmentation, loss and optimizer settings may not."))] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Override `epochs`.")] = None,
    budget_minutes: Annotated[Optional[float], typer.Option(help="Override the wall-clock budget.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any setting, KEY=VALUE with a TOML value (empty: \"\"), e.g. "
                      "--set 'arch.widths=[48, 96, 192, 384]' --set 'teacher=\"\"'; repeatable.")] = None,
) -> None:
    """Train the emotion CNN on FER2013 Training, picking the best epoch on validation data."""
    from confbot.modeling.train import load_train_config, parse_overrides, train

    try:
        overrides = parse_overrides(set_ or [])
        overrides.update({k: v for k, v in {"epochs": epochs, "budget_minutes": budget_minutes}.items()
                          if v is not None})
        cfg = load_train_config(config, overrides)
        best = train(cfg, out, resume=resume, command="confbot " + shlex.join(sys.argv[1:]))
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"best weights: {best}")


@app.command()
def analyze(
    paths: Annotated[list[Path], typer.Argument(help="Image and video files.")],
    annotate: Annotated[Optional[Path], typer.Option(
        help="Write the input with labelled boxes here (a directory for several inputs).")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second sampled from videos.")] = 2.0,
    tta: TtaOpt = None,
    tta_margin: TtaMarginOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Print one JSON object per face found in each image, or per sampled video frame."""
    from confbot.analyze import run_analyze
    from confbot.vision import build_analyzer

    if fps <= 0:
        _fail(ValueError(f"--fps must be positive, got {fps}"))
    try:
        settings = _settings(config, tta=tta, tta_margin=tta_margin)
        failures = run_analyze(paths, lambda: build_analyzer(settings), annotate=annotate,
                               sample_fps=fps, out=sys.stdout)
    except ConfbotError as exc:
        _fail(exc)
    if failures:
        raise typer.Exit(1)


@model_app.command("evaluate")
def model_evaluate(
    data: Annotated[Path, typer.Argument(help=".npz with arrays x (N,H,W uint8) and y (N,).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: Annotated[Optional[Path], typer.Option(help=(
        "Model manifest, or \"auto\": the shipped model, or the lite one on a CPU without an "
        "8-bit dot product, or a smaller one where that is timed over model.auto_budget_ms "
        "(default: the settings' [model] manifest, \"auto\" unless set)."))] = None,
    threads: Annotated[int, typer.Option(help="Interpreter threads for the timing.")] = 1,
    tta: TtaOpt = None,
    tta_margin: TtaMarginOpt = None,
    confusion_png: Annotated[Optional[Path], typer.Option(help="Save a confusion-matrix picture.")] = None,
    detector: Annotated[bool, typer.Option(
        "--detector", help="Also classify the faces as framed by the configured face detector, "
                           "as in a call, beside the data set's own framing.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Accuracy, per-class recall, confusion matrix and ms per face of the model."""
    from confbot.modeling.data import load_face_set
    from confbot.modeling.evaluate import (
        evaluate,
        format_detector_path,
        format_report,
        plot_confusion,
        through_detector,
    )
    from confbot.vision import (
        build_detector,
        choose_auto_model,
        configured_classifier,
        configured_manifest,
    )

    path = None
    auto = None
    try:
        settings = _settings(config, tta=tta, tta_margin=tta_margin)
        setting = settings.model.manifest if model is None else str(model)
        if setting == "auto":
            auto = choose_auto_model(cfg=dataclasses.replace(settings.model, threads=threads))
            manifest = auto.manifest
        else:
            manifest = configured_manifest(setting)
        classifier = configured_classifier(settings.model, manifest, threads=threads)
        faces = load_face_set(data)
        result = evaluate(classifier, faces, threads=threads)
        if detector:
            path = through_detector(build_detector(settings), classifier, faces)
    except ConfbotError as exc:
        _fail(exc)
    if confusion_png is not None:
        plot_confusion(result, confusion_png, f"{manifest.stem} on {data.name}")
    cpu = cpu_info()
    through = {} if path is None else {"through_detector": path.as_dict()}
    if as_json:
        typer.echo(json.dumps({"model": str(manifest), "data": str(data), **result.as_dict(),
                               "cpu": cpu.as_dict(), **through,
                               "auto": None if auto is None else auto.as_dict()}))
    else:
        typer.echo(f"model: {manifest}")
        if auto is not None:
            timed = ", ".join(f"{k} {v:.2f}" for k, v in auto.ms_per_face.items())
            typer.echo(f"auto: took {auto.manifest.name}; timed here, ms a face: {timed} "
                       f"(budget {auto.budget_ms})")
        typer.echo(format_report(result))
        if path is not None:
            typer.echo(format_detector_path(path))
        typer.echo(f"cpu: {cpu.describe()}")


@model_app.command("scores")
def model_scores(
    data: Annotated[Path, typer.Argument(help="Faces to score (.npz with x and y), usually Training.")],
    model: Annotated[list[Path], typer.Option(
        help="Model manifest or scores .npz; repeat it for an ensemble, whose scores are averaged.")],
    out: Annotated[Path, typer.Option(help="The .npz to write: a teacher for `model train`.")],
    tta: Annotated[str, typer.Option(help="Views averaged per model: none, flip or ten-crop.")] = "ten-crop",
) -> None:
    """Score faces once with a model or an ensemble and save a teacher file for `model train`."""
    from confbot.modeling.data import load_face_set
    from confbot.modeling.train import ensemble_scores, write_scores_file
    from face_core.classify import TTA_VIEWS

    try:
        if tta not in TTA_VIEWS:
            raise ConfigError(f"--tta must be one of {sorted(TTA_VIEWS)}, got {tta!r}")
        faces = load_face_set(data)
        scores, shas = ensemble_scores(model, tta, faces)
        write_scores_file(out, scores, faces, shas)
    except ConfbotError as exc:
        _fail(exc)
    agreement = float((scores.argmax(1) == faces.y).mean())
    typer.echo(json.dumps({"out": str(out), "n": len(faces), "models": [str(m) for m in model],
                           "tta": tta, "accuracy": round(agreement, 4)}))


@model_app.command("compare")
def model_compare(
    data: Annotated[Path, typer.Argument(help=".npz with arrays x (N,H,W uint8) and y (N,).")],
    model: Annotated[list[Path], typer.Option(
        help="Two model manifests, A then B; \"auto\" is the model the CPU gets by default.")],
    tta: TtaOpt = None,
    tta_margin: TtaMarginOpt = None,
    detector: Annotated[bool, typer.Option(
        "--detector", help="Compare on the faces the configured detector finds, cropped from its "
                           "boxes, as in a call.")] = False,
    condition: Annotated[Optional[str], typer.Option(
        help="Compare on the faces degraded by this condition of `model robustness` "
             "(name or name=level), e.g. small=24.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Whether model A beats model B on the same faces: McNemar's exact test, as one JSON object."""
    from dataclasses import replace

    from confbot.errors import DataError
    from confbot.modeling.conditions import parse_condition
    from confbot.modeling.data import load_face_set
    from confbot.modeling.evaluate import classify_all, compare_predictions, find_faces
    from confbot.vision import build_detector, configured_classifier, configured_manifest

    if len(model) != 2:
        _fail(ValueError(f"--model must be given exactly twice (A and B), got {len(model)}"))
    framing: dict[str, Any] = {}
    try:
        settings = _settings(config, tta=tta, tta_margin=tta_margin)
        faces = load_face_set(data)
        if condition is not None:
            degrade = parse_condition(condition)
            faces = replace(faces, x=degrade.apply(faces.x))
            framing["condition"] = degrade.label
        classifiers = [configured_classifier(settings.model,
                                             configured_manifest(str(m), cfg=settings.model),
                                             threads=1) for m in model]
        views, y = [faces.x, faces.x], faces.y
        if detector:
            face_detector = build_detector(settings)
            located = find_faces(face_detector, faces.x)
            if not len(located.found):
                raise DataError(f"{data}: the {face_detector.name} detector found none of "
                                f"its {len(faces)} faces")
            views = [located.crops(faces.x, size=c.input_size, margin=c.manifest.crop_margin)
                     for c in classifiers]
            y = faces.y[located.found]
            framing |= {"detector": face_detector.name, "faces": len(faces)}
        preds = [classify_all(c, v).argmax(1) for c, v in zip(classifiers, views, strict=True)]
    except ConfbotError as exc:
        _fail(exc)
    result = compare_predictions(preds[0], preds[1], y)
    typer.echo(json.dumps({"model_a": str(model[0]), "model_b": str(model[1]), "data": str(data),
                           "tta": settings.model.tta, "tta_margin": settings.model.tta_margin,
                           **framing, **result.as_dict()}))


@model_app.command("robustness")
def model_robustness(
    data: Annotated[Path, typer.Argument(help=".npz with arrays x (N,H,W uint8) and y (N,).")],
    model: Annotated[Optional[list[Path]], typer.Option(help=(
        "Model manifest, or \"auto\"; repeat it to put models side by side (default: the "
        "settings' [model] manifest)."))] = None,
    condition: Annotated[Optional[list[str]], typer.Option(help=(
        "A degradation, as name or name=level: jpeg (quality), small (pixels a side), blur "
        "(sigma in pixels), dark (gain), contrast (factor), noise (sd in grey levels), tilt "
        "(degrees). Repeat it; default: each at its default level."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random conditions (noise).")] = 0,
    tta: TtaOpt = None,
    tta_margin: TtaMarginOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Accuracy on faces degraded as call video degrades them, against the same faces clean."""
    from confbot.modeling.conditions import default_conditions, parse_condition
    from confbot.modeling.data import load_face_set
    from confbot.modeling.evaluate import format_conditions, under_conditions
    from confbot.vision import configured_classifier, configured_manifest

    reports = []
    try:
        settings = _settings(config, tta=tta, tta_margin=tta_margin)
        conditions = ([parse_condition(c) for c in condition] if condition
                      else default_conditions())
        manifests = [configured_manifest(str(m), cfg=settings.model)
                     for m in model or [settings.model.manifest]]
        classifiers = [configured_classifier(settings.model, m, threads=1) for m in manifests]
        faces = load_face_set(data)
        for manifest, classifier in zip(manifests, classifiers, strict=True):
            clean, results = under_conditions(classifier, faces, conditions, seed=seed)
            reports.append((manifest, clean, results))
    except ConfbotError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps({
            "data": str(data), "n": len(faces), "tta": settings.model.tta,
            "tta_margin": settings.model.tta_margin, "seed": seed,
            "models": [{"model": str(m), "accuracy": round(clean, 4),
                        "conditions": [r.as_dict() for r in results]}
                       for m, clean, results in reports]}))
    else:
        typer.echo(f"{len(faces)} faces of {data}; test-time augmentation {settings.model.tta!r}")
        for manifest, clean, results in reports:
            typer.echo(format_conditions(str(manifest), clean, results))


def _recalibrate(manifests: list[Path], out: Path, train_data: Path, name: str, faces: int,
                 low_res_prob: float, what: str) -> None:
    """precise-bn and average: re-estimate the batch norms of the first export (averaged with
    the others, if any) on training faces and export the result."""
    from confbot.modeling.data import load_face_set
    from confbot.modeling.recalibrate import recalibrate_export

    try:
        check = recalibrate_export(manifests[0], load_face_set(train_data), out, name=name,
                                   faces=faces, average_with=manifests[1:],
                                   low_res_prob=low_res_prob)
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"exported {out / name}.tflite, {what}: {check}")


@model_app.command("export")
def model_export(
    run: Annotated[Path, typer.Argument(help="A training run directory.")],
    out: Annotated[Path, typer.Option(help="Where to write the .tflite and its manifest.")] = Path("models"),
    name: NameOpt = "emotion_cnn",
    quantize: Annotated[str | None, typer.Option(
        help="float32 or int8 (calibrated on training faces); default: the run's export_quantize.",
    )] = None,
) -> None:
    """Export a run's best weights to LiteRT, checking it agrees with the trained model."""
    from confbot.modeling.export import export_run

    try:
        check = export_run(run, out, name=name, quantize=quantize)
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"exported {out / name}.tflite: {check}")


@model_app.command("precise-bn")
def model_precise_bn(
    manifest: Annotated[Path, typer.Argument(help="An export's manifest, its float32 weights beside it.")],
    out: Annotated[Path, typer.Option(help="Where to write the re-exported model.")],
    train_data: BnDataOpt = TRAINING_FACES,
    name: NameOpt = "emotion_cnn",
    faces: BnFacesOpt = 0,
    low_res_prob: BnLowResOpt = 0.0,
) -> None:
    """Re-export a model with its batch-norm statistics re-estimated on training faces, as the
    product will show them to it."""
    _recalibrate([manifest], out, train_data, name, faces, low_res_prob,
                 "with precise batch norm")


@model_app.command("average")
def model_average(
    manifests: Annotated[list[Path], typer.Argument(
        help="Two or more exports of one network (say fine-tunes from one start), their float32 "
             "weights beside them.")],
    out: Annotated[Path, typer.Option(help="Where to write the averaged model.")],
    train_data: BnDataOpt = TRAINING_FACES,
    name: NameOpt = "emotion_cnn",
    faces: BnFacesOpt = 0,
    low_res_prob: BnLowResOpt = 0.0,
) -> None:
    """Average several exports' weights equally into one network of the same cost, with its
    batch norms re-estimated as precise-bn does; exported like the first one."""
    if len(manifests) < 2:
        _fail(ConfigError("average needs at least two exports"))
    _recalibrate(manifests, out, train_data, name, faces, low_res_prob,
                 f"the average of {len(manifests)} networks")


@model_app.command("standardize")
def model_standardize(
    manifest: Annotated[Path, typer.Argument(help="A model's manifest, rewritten in place.")],
    train_data: Annotated[Path, typer.Option(
        help="Training faces (.npz) whose mean grey level and contrast each face is moved to.")]
        = TRAINING_FACES,
    off: Annotated[bool, typer.Option("--off", help="Remove the step instead.")] = False,
) -> None:
    """Make a model blind to each face's brightness and contrast: its manifest gains
    input.standardize, the training faces' statistics, which the classifier moves every face to
    before the network sees it. The model file itself is unchanged."""
    from confbot.modeling.data import face_statistics, load_face_set
    from confbot.modeling.export import set_standardize

    try:
        stats = None if off else face_statistics(load_face_set(train_data).x)
        written = set_standardize(manifest, stats)
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(json.dumps({"manifest": str(manifest), "standardize": written}))


@model_app.command("convert-keras")
def model_convert_keras(
    h5: Annotated[Path, typer.Argument(help="A Keras .h5/.keras emotion model (7 FER classes).")],
    out: Annotated[Path, typer.Option(help="Directory for the .tflite and manifest.")],
    name: Annotated[str, typer.Option(help="Base name of the files.")],
    scale: Annotated[float, typer.Option(help="Model input = pixel * scale + offset.")] = 1 / 255,
    offset: Annotated[float, typer.Option(help="See --scale.")] = 0.0,
) -> None:
    """Convert another Keras FER model to LiteRT, to compare it with `model evaluate`."""
    from confbot.modeling.export import convert_keras_file

    try:
        check = convert_keras_file(h5, out, name=name, scale=scale, offset=offset,
                                   extra={"source": str(h5)})
    except ConfbotError as exc:
        _fail(exc)
    typer.echo(f"converted to {out / name}.tflite: top-1 agreement {check.top1_agreement:.4f}")


@bench_app.command("face")
def bench_face_cmd(
    faces: Annotated[Path, typer.Option(help="Faces to paste into the frames (.npz, x and y).")] = Path(
        "../shared/datasets/fer2013/publictest.npz"),
    frames: Annotated[int, typer.Option(help="Distinct frames.")] = 40,
    faces_per_frame: Annotated[int, typer.Option(help="Faces in each frame.")] = 2,
    seconds: Annotated[float, typer.Option(help="Minimum time per stage.")] = 3.0,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    tta: TtaOpt = None,
    tta_margin: TtaMarginOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Detect and classify on 640x360 frames with faces: frames/s and ms/frame per stage."""
    from confbot.bench_face import bench_face, synthetic_frames
    from confbot.modeling.data import load_face_set
    from confbot.vision import build_analyzer

    if not 1 <= faces_per_frame <= 4 or frames < 1:
        _fail(ValueError("--faces-per-frame must be 1..4 and --frames positive"))
    try:
        analyzer = build_analyzer(_settings(config, tta=tta, tta_margin=tta_margin))
        face_set = load_face_set(faces)
    except ConfbotError as exc:
        _fail(exc)
    result = bench_face(analyzer, synthetic_frames(face_set.x, frames, faces_per_frame), seconds)
    cpu = cpu_info()
    if as_json:
        typer.echo(json.dumps({**result, "cpu": cpu.as_dict()}))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")
        typer.echo(f"cpu: {cpu.describe()}")


@bench_app.command("train")
def bench_train_cmd(
    config: Annotated[Optional[Path], typer.Option(help="Training TOML (see training.toml).")] = None,
    steps: Annotated[int, typer.Option(help="Timed batches per precision.")] = 8,
    precision: Annotated[str, typer.Option(
        help="both, float32 or bfloat16 (mixed bfloat16 compute).")] = "both",
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a setting, KEY=VALUE as for `confbot model train`.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Training images/s and seconds per epoch on this machine, in float32 and mixed bfloat16,
    for a training config's network: measure before committing to a long run."""
    from confbot.modeling.train import auto_bf16, load_train_config, parse_overrides, training_speed

    choices = {"both": (False, True), "float32": (False,), "bfloat16": (True,)}
    if precision not in choices:
        _fail(ValueError(f"--precision must be one of {list(choices)}, got {precision!r}"))
    try:
        cfg = load_train_config(config, parse_overrides(set_ or []))
        cpu = cpu_info()
        results = [training_speed(cfg, bf16=bf16, steps=steps) for bf16 in choices[precision]]
        auto, _ = auto_bf16(cpu)
    except ConfbotError as exc:
        _fail(exc)
    summary = {"results": results, "auto_picks": "mixed_bfloat16" if auto else "float32",
               "cpu": cpu.as_dict()}
    if as_json:
        typer.echo(json.dumps(summary))
        return
    for r in results:
        typer.echo(f"{r['policy']}: {r['images_per_s']} images/s, {r['epoch_s']} s an epoch "
                   f"(batch {r['batch_size']}, {r['steps']} timed steps)")
    typer.echo(f'mixed_bfloat16 = "auto" picks {summary["auto_picks"]} here')
    typer.echo(f"cpu: {cpu.describe()}")


@bench_app.command("call")
def bench_call_command(
    participants: Annotated[int, typer.Option(help="WHIP publishers in the call.")] = 16,
    seconds: Annotated[float, typer.Option(help="Length of the measured window.")] = 60.0,
    sample_fps: Annotated[float, typer.Option(help="Samples per second per participant.")] = 2.0,
    warmup: Annotated[float, typer.Option(help="Seconds allowed before measuring.")] = 30.0,
    faces: Annotated[Path, typer.Option(help="FER2013 faces (.npz) to build the video from.")] = Path(
        "../shared/datasets/fer2013/publictest.npz"),
    detector: Annotated[str, typer.Option(
        help="The server's face detector (detector.kind): auto, haar, blazeface or yunet.")] = "auto",
    model: Annotated[str, typer.Option(
        help="The server's emotion model (model.manifest): auto or a manifest's path.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A whole call on loopback: samples/s, frame-to-feed latency, CPU per participant, RSS."""
    from confbot.bench_call import bench_call

    try:
        result = bench_call(participants=participants, seconds=seconds, sample_fps=sample_fps,
                            faces=faces, warmup_s=warmup, detector=detector, model=model)
    except ConfbotError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key}: {value}")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Which emotion model and face detector a command runs, and why: with "auto" the machine
    # decides, so analyze, evaluate and bench say it on stderr.
    logging.getLogger("confbot.vision").setLevel(logging.INFO)
    from confbot import cli_server

    cli_server.register(app)
    app()
