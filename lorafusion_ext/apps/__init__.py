"""The applications on top of the library: the `lorafusion` command line (`cli`), the demo
(`demo`), the end-to-end training and evaluation pipelines (`pipelines`) and the kernel
benchmark (`benchmark`). Nothing below this package imports it."""
