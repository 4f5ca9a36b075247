"""The model's feature pipeline: a dataset's named, typed columns (service/data/table.py) in,
the float32 matrix the model trains on and predicts from out.

Fitted on the training rows only, stored in the checkpoint as JSON (``Pipeline.to_json``,
never a pickle), applied by the predictor to named fields (``{"rows": [...]}``,
``{"columns": {...}}``, the inference protocol's one input per column). A model trained on a
numeric matrix has the identity pipeline: its feature names, all numeric, nothing imputed.
"""

from service.features.options import FeatureOptions
from service.features.pipeline import (
    PIPELINE_VERSION,
    InputColumn,
    Pipeline,
    fit_pipeline,
    identity_pipeline,
)
from service.features.prepare import (
    Prepared,
    numeric_table,
    prepare_table,
    scored_data,
    select,
    table_targets,
)

__all__ = ["PIPELINE_VERSION", "FeatureOptions", "InputColumn", "Pipeline", "Prepared",
           "fit_pipeline", "identity_pipeline", "numeric_table", "prepare_table", "scored_data",
           "select",
           "table_targets"]
