"""One module per pipeline component; each exposes `run(inputs, output_dir, config, runtime)`."""
