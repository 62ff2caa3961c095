"""`resclassify eval`: top-1/top-5 accuracy over labelled images (or prediction files), the report on stdout,
the files beside it, and the exit status --fail-under and --max-failures ask for."""

import contextlib
import itertools
import os
import sys

import click

from ..record_formats import open_file_writer
from ..render.outputs import open_writer
from ..render.progress import EvalProgress
from ..streams import GuardedStream, display_path
from .exits import UNREADABLE_STATUS, failure_status, fail_under_status, report_error, report_warning, reports_errors, whole_record
from .options import (ExistingFileOrUrl, check_preprocessing_options, check_resume_options, chosen_format, chosen_shard,
                      format_options, max_failures_option, model_options, probabilities_out_option, record_file_option,
                      report_options, scale_options)
from .outputs import (check_can_write, lock_early, open_for_appending, open_record_output, open_whole_run_output,
                      opened_probabilities, probability_files)
from .report import report_from_files, whole_run_records, write_report_page
from .running import chosen_engine, network_threads, open_decoding, open_model_for


@click.command(name="eval")
@click.argument("sources", nargs=-1, metavar="FOLDER | --from-predictions FILE...")
@click.option("--from-predictions", is_flag=True,
              help="Build the report from prediction files (eval --predictions-out .jsonl/.csv/.parquet, e.g. the "
                   "shards of an array job) instead of running a model over FOLDER; no model, no network.")
@click.option("--labels", "labels_file", type=ExistingFileOrUrl(), metavar="FILE|URL",
              help="Labels for a flat folder: CSV/TSV with a header (filename,label), Kaggle's "
                   "LOC_val_solution.csv, or the devkit's ILSVRC2012_validation_ground_truth.txt.")
@click.option("--real-labels", "real_labels_file", type=ExistingFileOrUrl(), metavar="FILE|URL",
              help="ReaL's real.json: a top-k prediction hits when it is any of the image's ReaL labels; "
                   "images with none are skipped.")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Also report top-k accuracy (top-1 and top-5 are always reported); predictions kept per image.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Evaluate only the first N labelled images in sorted path order.")
@format_options("report")
@record_file_option("--predictions-out", "eval-records", "Write one record per image (true label, top-k, hit@1, "
                                                         "hit@5) as it is scored.")
@record_file_option("--misclassified-out", "misclassified", "Write the images whose top-1 missed, with true and "
                                                            "predicted labels.")
@report_options
@click.option("--resume", is_flag=True,
              help="Continue the --predictions-out file of an interrupted run: count its records, run only the "
                   "images it lacks; the report covers all of them.")
@probabilities_out_option
@record_file_option("--confusion-out", "confusion", "Write the top-1 confusion matrix as true,predicted,count "
                                                    "rows (class indices), one per pair that occurred.")
@click.option("--force", is_flag=True, help="Overwrite existing output files (--predictions-out, "
                                            "--misclassified-out, --report, --probabilities-out, --confusion-out).")
@click.option("--fail-under", type=click.FloatRange(0, 100), default=None, metavar="PCT",
              help="Exit with status 1 when top-1 accuracy (in %) is below PCT.")
@max_failures_option
@scale_options
@model_options
@reports_errors
def eval_command(sources, from_predictions, labels_file, real_labels_file, top_k, limit, format_name, as_json,
                 predictions_out, misclassified_out, report_path, report_images, resume, probabilities_out,
                 confusion_out, force, fail_under, max_failures, shard_text, shards, engine, ray_address, **options):
    """Measure top-1/top-5 accuracy over a folder of labelled images.

    FOLDER holds class folders named by WordNet id (n02123045), Keras label (tabby) or
    class index (0..999, as ImageNetV2); or it is a flat folder and --labels says which
    class each image is. FOLDER may be a bucket prefix (s3://bucket/val/), listed once, or name
    tar shards in the WebDataset layout ('shards/val-{000000..000099}.tar', a glob, a .tar path
    or URL): each image's class is its .cls/.txt/.json sibling's, or --labels'. With
    --from-predictions, the arguments are prediction files (paths or URLs) instead, whose
    report is that of one run over all their images.

    \b
    Examples:
      resclassify eval imagenet/val
      resclassify eval val_flat --labels ILSVRC2012_validation_ground_truth.txt
      resclassify eval s3://my-bucket/imagenet/val/ --predictions-out run.jsonl
      resclassify eval imagenetv2-matched-frequency --json --predictions-out run.jsonl
      resclassify eval imagenet/val --report report.html
      resclassify eval imagenet/val --shard 2/8 --predictions-out shard-2.jsonl --resume
      resclassify eval --from-predictions shard-*.jsonl
      resclassify eval 'shards/val-{000000..000009}.tar' --predictions-out val.jsonl
      resclassify eval val/ --tta ten-crop --interpolation bilinear --json
    """
    from ..sources.inputs import find_ground_truth
    from ..sources.tars import names_tar_shards
    from ..evaluation import reported_ks, run_evaluation
    from ..labels import read_class_file
    from ..sources.listing import PrefixListings, saved_listings
    from ..sources.remote import is_url

    check_preprocessing_options(**options)
    named = {"--predictions-out": predictions_out, "--misclassified-out": misclassified_out, "--report": report_path,
             "--probabilities-out": probabilities_out, "--confusion-out": confusion_out}
    if probabilities_out is not None:
        named["--probabilities-out's row names"] = probability_files(probabilities_out)[1]
    outputs = [path for path in named.values() if path is not None]
    for first, second in itertools.combinations([(n, p) for n, p in named.items() if p is not None], 2):
        if os.path.abspath(first[1]) == os.path.abspath(second[1]):
            raise click.UsageError(f"{first[0]} and {second[0]} name the same file")
    if from_predictions:
        report_format = chosen_format("report", format_name, as_json)
        return evaluate_files(sources, report_format, misclassified_out, report_path, report_images, force,
                              fail_under, max_failures)
    if len(sources) != 1:
        raise click.UsageError("eval takes one FOLDER (or --from-predictions FILE...)" if sources else
                               "Missing argument 'FOLDER'.")
    folder = sources[0]
    if not is_url(folder) and not os.path.isdir(folder) and not names_tar_shards(folder):
        raise click.BadParameter(f"Directory {folder!r} does not exist." if not os.path.exists(folder) else
                                 f"{folder!r} is not a folder.", param_hint="'FOLDER'")
    check_resume_options(predictions_out, "--predictions-out", resume, force)
    if probabilities_out is not None and resume:
        raise click.UsageError("--probabilities-out does not go with --resume: the images the earlier run did are "
                               "not run again, so their probabilities are not known")
    shard = chosen_shard(shard_text, shards)
    for path in outputs:
        # --resume makes every whole-run output again from all the records, over the earlier run's files.
        check_can_write(path, force or resume, replaced=path == report_path or (resume and path != predictions_out))
    quiet = options["quiet"]
    engine = chosen_engine(engine, ray_address, options)
    # Tar shards are split whole by --shard, before they are indexed; with --limit (the first images of the
    # whole set) the images are split instead.
    whole_shards = shard if limit is None else None
    # A prefix is listed once, and a resumed run takes the listing its first run saved beside --predictions-out.
    listings = (saved_listings(predictions_out, "eval", [folder]) if resume and predictions_out is not None
                else PrefixListings("eval", [folder]))
    # Ground truth before the model where the class names are known without it, so that a
    # wrong folder fails in a second, not after TensorFlow has started.
    if options["classes_path"] is not None:
        truth = find_ground_truth(folder, labels_file, real_labels_file, read_class_file(options["classes_path"]),
                                  lister=listings.images, shard=whole_shards)
    elif options["model_path"] is None:
        truth = find_ground_truth(folder, labels_file, real_labels_file, lister=listings.images, shard=whole_shards)
    else:
        truth = None
    with contextlib.ExitStack() as stack:
        record_stream = stack.enter_context(lock_early(predictions_out, resume))
        # Decode workers start before the model loads (so that the two overlap) where the images are known.
        decoder = None if truth is None else stack.enter_context(
            open_decoding(engine, evaluation_count(truth, limit, shard), options))
        model, preprocessing = open_model_for(engine, options)
        if truth is None:
            truth = find_ground_truth(folder, labels_file, real_labels_file, model.classes, lister=listings.images,
                                      shard=whole_shards)
            decoder = stack.enter_context(open_decoding(engine, evaluation_count(truth, limit, shard), options))
        if not quiet:
            warn_about_unmatched(truth)
        run_count = evaluation_count(truth, limit, shard)
        real = real_labels_file is not None

        resumption = None
        if resume:
            from ..evaluation import images_to_run, resume_evaluation
            from ..records import identity_of_run

            if record_stream is None:  # no file when the run started: locked before it is read all the same
                record_stream = stack.enter_context(open_for_appending(predictions_out))
            # Checked now, before anything is written: run_evaluation continues from it without reading it again.
            resumption = resume_evaluation(predictions_out, images_to_run(truth, limit, shard),
                                           identity_of_run(model, preprocessing, top_k))
        earlier = [] if resumption is None else resumption.records

        records_out = None
        if predictions_out:
            if record_stream is None:
                record_stream = stack.enter_context(open_record_output(predictions_out, "replace" if force else "new"))
            listings.save(predictions_out)  # before the first record, and only once this run holds the file
            records_out = open_file_writer("eval-records", predictions_out, record_stream, ks=reported_ks(top_k),
                                           real_labels=real, header=resumption is None or resumption.header is None)
        whole_run = whole_run_records(stack, report_path=report_path, report_images=report_images,
                                      misclassified_out=misclassified_out, real_labels=real, force=force,
                                      resume=resume)
        probabilities = stack.enter_context(
            opened_probabilities(probabilities_out, run_count, len(model.classes), force))
        confusion = None
        if confusion_out:
            confusion = open_file_writer("confusion", confusion_out,
                                         stack.enter_context(open_whole_run_output(confusion_out, force, resume)))
        # Resumed: the earlier records first, so the misclassified file and the page cover the whole run.
        for record in earlier:
            whole_run.add(record)
        stack.enter_context(engine)
        progress = stack.enter_context(
            EvalProgress(run_count - len(earlier), sys.stderr, enabled=sys.stderr.isatty() and not quiet))

        def on_record(record):
            with whole_record():
                if "error" in record:
                    progress.line(f"resclassify: error: {display_path(record['path'])}: {record['error']}")
                if records_out is not None:
                    records_out.write(record)
                whole_run.add(record)
                progress.advance()

        report = run_evaluation(truth, model, top_k=top_k, limit=limit, shard=shard, batch_size=options["batch_size"],
                                preprocessing=preprocessing, workers=options["workers"],
                                decoding=decoder or options["decoding"],
                                network_threads=network_threads(options, model),
                                max_pixels=options["max_pixels"], on_record=on_record, resume=resumption,
                                engine=engine, on_probabilities=probabilities.write if probabilities else None,
                                on_confusion_matrix=(lambda rows: write_confusion_rows(confusion, rows)) if confusion
                                else None)
        whole_run.close()
        if records_out is not None:
            records_out.close()  # a .parquet file is made from its journal here
    finish_evaluation(report, chosen_format("report", format_name, as_json), fail_under, quiet, run_count, report_path,
                      whole_run.collector, force or resume, max_failures, unreadable_sources=len(truth.unreadable))


def evaluate_files(files, report_format, misclassified_out, report_path, report_images, force, fail_under,
                   max_failures):
    """eval --from-predictions: the report of the files' records, no model; only output options apply."""
    ctx = click.get_current_context()
    allowed = {"sources", "from_predictions", "format_name", "as_json", "misclassified_out", "report_path",
               "report_images", "force", "fail_under", "max_failures", "quiet"}
    given = [param for param in ctx.command.params if param.name not in allowed
             and ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{given[0].opts[-1]} does not go with --from-predictions: the files already hold "
                               "the model's results")
    if not files:
        raise click.UsageError("--from-predictions needs the prediction files: FILE...")
    report, collector = report_from_files(files, report_path=report_path, report_images=report_images, force=force,
                                          misclassified_out=misclassified_out)
    for failure in report["failed"]:
        report_error(f"{display_path(failure['path'])}: {failure['error']}")
    run_count = report["images"]["evaluated"] + report["images"]["failed"]
    finish_evaluation(report, report_format, fail_under, ctx.params["quiet"], run_count, report_path, collector, force,
                      max_failures)


def finish_evaluation(report, report_format, fail_under, quiet, run_count, report_path=None, collector=None,
                      force=False, max_failures=None, unreadable_sources=0):
    """Print the report (and write the HTML page); exit 1 when top-1 is under --fail-under, else UNREADABLE_STATUS
    when more images failed than --max-failures allows, or tar shards could not be read at all (each counted
    as one failed input beside the images: their images are unknown, so the figures leave them out)."""
    writer = open_writer("report", report_format, GuardedStream(sys.stdout, "stdout"))
    writer.write(report)
    writer.close()
    if report_path:
        write_report_page(report_path, report, collector, force)
    failed = report["images"]["failed"]
    status = failure_status(failed, run_count, max_failures, quiet,
                            "images could not be read; they are left out of the figures")
    if unreadable_sources:
        within = max_failures is not None and max_failures.allows(failed + unreadable_sources,
                                                                   run_count + unreadable_sources)
        if not quiet:
            shards = f"{unreadable_sources} tar shard{'s' if unreadable_sources != 1 else ''}"
            report_warning(f"{shards} could not be read; their images are not in the figures"
                           + (f" (within --max-failures {max_failures.text})" if within else ""))
        status = status or (0 if within else UNREADABLE_STATUS)
    status = fail_under_status(report, fail_under) or status
    sys.exit(status)


def evaluation_count(truth, limit, shard):
    """How many images an evaluation runs: the labelled ones, cut by --limit, then --shard (evaluation.images_to_run)."""
    from ..evaluation import images_to_run

    return len(images_to_run(truth, limit, shard))


def write_confusion_rows(writer, rows):
    """The library's (true, predicted, images) confusion rows, through --confusion-out's writer."""
    for true, predicted, count in rows:
        writer.write({"true": true, "predicted": predicted, "count": count})
    writer.close()


def warn_about_unmatched(truth):
    """Images without a label and labels without an image, on stderr: counted, first few named."""
    from ..sources.ground_truth import first_few

    by_reason = {}
    for skipped in truth.skipped:
        by_reason.setdefault(skipped.reason, []).append(display_path(skipped.path))
    for reason, paths in by_reason.items():
        report_warning(f"{len(paths)} image{'s' if len(paths) != 1 else ''} skipped, {reason}: "
                       f"{first_few(paths)}")
    for skipped in truth.not_followed:
        report_warning(f"{display_path(skipped.path)}: {skipped.reason}")
    for merged in truth.merged_class_folders:
        folders = [display_path(name) for name in merged["folders"]]
        report_warning(f"class folders {', '.join(folders[:-1])} and {folders[-1]} all name class {merged['index']} "
                       f"({merged['label']}, {merged['wnid']}); their images are counted together")
    for source, names in truth.labels_without_image.items():
        report_warning(f"{source}: {len(names)} label{'s' if len(names) != 1 else ''} with no image: "
                       f"{first_few(names)}")
