"""`agnews-pipeline`: run, retrain, predict, serve, runs, show, diff, gc, embeddings, train-worker. One module
per command group: run.py (run, retrain, train-worker), predict.py, serve.py, history.py (runs, show, diff),
maintenance.py (gc, embeddings); parser.py builds the command line (serve.py declares serve's own flags),
flags.py holds the flags several commands share, exit_codes.py the exit codes, utils.py what several commands
share, and main.py the entry point (dispatch and the error path)."""
