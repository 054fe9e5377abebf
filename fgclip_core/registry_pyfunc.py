"""MLflow "models from code" entry point: MLflow stores this file, not a pickle, and runs it at load time.

Loading needs ``fgclip_core`` importable (the registered model's pip requirements name its stack).
"""

from mlflow.models import set_model

from fgclip_core.registry import FGCLIPPyfunc

set_model(FGCLIPPyfunc())
