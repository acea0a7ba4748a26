"""Image data: SOP-format lists, samplers and loaders (`reader`), decoding and transforms
(`imgtool`), the converters of the benchmark archives (`converters`, `prepare`) and the
synthetic demo set (`demo`)."""
