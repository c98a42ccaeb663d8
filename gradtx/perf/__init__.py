"""Performance tools, apart from the math: ``update_and_apply`` (one loop per leaf per
step), the XLA:CPU switch it needs (``enable_cpu_multi_output_fusion``), and the packed
layout for many small leaves (``Packing``)."""
