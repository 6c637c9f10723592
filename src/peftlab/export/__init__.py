"""Export: a run's merged model or adapter copy (with a note saying how to load it) and GGUF files
through llama.cpp's converter and quantizer.

Layer 8. May import: inference, training, tasks, models, data, runs, config and the base modules.
"""
