"""`resclassify predict`: the top classes of each image, on stdout and in a record file, and the run line above them."""

import contextlib
import os
import sys

import click

from ..record_formats import open_file_writer
from ..render.outputs import open_writer
from ..render.terminal import exact_stream
from ..streams import GuardedStream, display_path
from .exits import failure_status, report_error, report_warning, reports_errors, whole_record
from .options import (check_preprocessing_options, check_record_file_name, check_resume_options, chosen_format,
                      chosen_shard, format_options, max_failures_option, model_options, probabilities_out_option,
                      scale_options)
from .outputs import (check_can_write, lock_early, open_for_appending, open_record_output, opened_probabilities,
                      probability_files)
from .running import chosen_engine, network_threads, open_decoding, open_model_for


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-k", "--top-k", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many classes to show per image.")
@probabilities_out_option
@format_options("predictions")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.jsonl|FILE.csv|FILE.parquet",
              callback=lambda ctx, param, value: check_record_file_name("predict-records", value),
              help="Write the records to FILE as they come (JSON Lines, CSV or Parquet, by extension); stdout then shows "
                   "the table only on a terminal, or what --format asks for.")
@click.option("--resume", is_flag=True,
              help="Continue the --output file of an interrupted run: keep its records, drop a half-written "
                   "last line, classify only the inputs it lacks.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output or --probabilities-out file.")
@max_failures_option
@scale_options
@model_options
@reports_errors
def predict(inputs, top_k, probabilities_out, format_name, as_json, output, resume, force, max_failures, shard_text,
            shards, engine, ray_address, **options):
    """Print the top classes for each image.

    INPUT is an image file, a folder (searched recursively for images), a URL or a bucket
    prefix (s3://bucket/photos/, gs://..., https://...; listed once), tar shards
    ('shards/val-{000000..000099}.tar', a glob, a .tar path or URL: each image member), or -
    to read paths or URLs from stdin, one a line. Results come in input order (with --shard,
    in sorted order).

    \b
    Examples:
      resclassify predict sample_images/cat.jpg
      find photos -name '*.jpg' | resclassify predict --json - | jq '.predictions[0].label'
      resclassify predict --arch resnet152v2 photos/
      resclassify predict --model flowers.keras --classes flowers.txt photos/
      resclassify predict photos/ --shard 3/8 --output labels-3.jsonl --resume
      resclassify predict s3://my-bucket/photos/ --output labels.parquet
      resclassify predict --tta ten-crop --probabilities-out probs.npy photos/
    """
    from .. import classify
    from ..sources.listing import PrefixListings, saved_listings
    from ..sources.inputs import expand_inputs, input_path
    from ..pipeline import count_images

    output_format = chosen_format("predictions", format_name, as_json)  # a clash is a usage error, at once
    quiet = options["quiet"]

    def on_skip(skipped):
        if not quiet:
            report_warning(f"{display_path(skipped.path)}: {skipped.reason}")

    check_resume_options(output, "--output", resume, force)
    check_preprocessing_options(**options)
    if probabilities_out is not None and resume:
        raise click.UsageError("--probabilities-out does not go with --resume: the inputs the earlier run did are "
                               "not run again, so their probabilities are not known")
    for path in probability_files(probabilities_out):
        check_can_write(path, force)
    shard = chosen_shard(shard_text, shards)
    if output is not None and not resume:
        check_can_write(output, force)
    elif output is not None:
        check_can_write(output, True)
    engine = chosen_engine(engine, ray_address, options)
    # Paths on stdin are bytes, as file names are: a name that is not UTF-8 still reaches its file.
    stdin = getattr(sys.stdin, "buffer", sys.stdin) if "-" in inputs else None
    # A prefix is listed once, and a resumed run takes the listing its first run saved beside --output.
    listings = (saved_listings(output, "predict", inputs) if resume and output is not None
                else PrefixListings("predict", inputs))
    items = expand_inputs(inputs, stdin, on_skip=on_skip, lister=listings.images, shard=shard)
    with contextlib.ExitStack() as stack:
        record_stream = stack.enter_context(lock_early(output, resume))
        # Decode workers start before the model loads, so that the two overlap.
        decoder = stack.enter_context(open_decoding(engine, count_images(items), options))
        model, preprocessing = open_model_for(engine, options)
        resumption = None
        if resume:
            from ..records import identity_of_run, resume_records

            if record_stream is None:  # no file when the run started: locked before it is read all the same
                record_stream = stack.enter_context(open_for_appending(output))
            # Checked now, before anything is written: classify continues from it without reading it again.
            resumption = resume_records(output, [input_path(item) for item in items],
                                        identity_of_run(model, preprocessing, top_k))

        format_given = (click.get_current_context().get_parameter_source("format_name")
                        is not click.core.ParameterSource.DEFAULT) or as_json
        writers = []
        if output is None or format_given or sys.stdout.isatty():
            about = describe_run(model, preprocessing, getattr(decoder, "plan", None),
                                 network_threads(options, model), engine.name)
            stdout = GuardedStream(sys.stdout, "stdout")
            writers.append(open_writer("predictions", output_format,
                                       exact_stream(stdout) if output_format == "csv" else stdout, about=about))
        if output is not None:
            if record_stream is None:
                record_stream = stack.enter_context(open_record_output(output, "replace" if force else "new"))
            listings.save(output)  # before the first record, and only once this run holds the file
            writers.append(open_file_writer("predict-records", output, record_stream,
                                            header=resumption is None or resumption.header is None))
        probabilities = stack.enter_context(
            opened_probabilities(probabilities_out, len(items), len(model.classes), force))
        stack.enter_context(engine)
        failed = 0 if resumption is None else resumption.failed
        records = classify(items, model, top_k=top_k, batch_size=options["batch_size"], preprocessing=preprocessing,
                           workers=options["workers"], decoding=decoder or options["decoding"],
                           max_pixels=options["max_pixels"], engine=engine,
                           on_probabilities=probabilities.write if probabilities else None, resume=resumption)
        # closing: a Ctrl-C here stops the decode workers now, not when the traceback is collected.
        with contextlib.closing(records):
            try:
                for record in records:
                    with whole_record():
                        if "error" in record:
                            failed += 1
                            report_error(f"{display_path(record['path'])}: {record['error']}")
                        for writer in writers:
                            writer.write(record)
            except KeyboardInterrupt:
                for writer in writers:
                    writer.close()  # what was written stays valid (a JSON array gets its closing bracket)
                raise
        for writer in writers:
            writer.close()
    status = failure_status(failed, len(items), max_failures, options["quiet"], "inputs could not be classified")
    if status:
        sys.exit(status)


def describe_run(classifier, preprocessing, plan=None, threads=None, engine_name="local"):
    """One line saying which network, preprocessing, decoding and threads produced a run's results."""
    if classifier.arch == "custom":
        network = f"{classifier.name} ({len(classifier.classes)} classes)"
    else:
        network = f"{classifier.arch}, weights {os.path.basename(classifier.weights)}"
    # On Ray the actors choose their runtime for their own device: this process's copy says nothing of it.
    runtime = f"{classifier.backend} on {classifier.device}" if engine_name == "local" else f"{engine_name} actors"
    line = f"{network} · {runtime} · {preprocessing.describe()}"
    if plan is not None:
        line += f" · decoding on {plan.describe()}, network on {threads} CPU thread{'' if threads == 1 else 's'}"
    return line
