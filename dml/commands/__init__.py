"""The commands, one module each, with the `main` that both the root script
(`python eval.py ...`) and the console command (`dml eval ...`) call."""
