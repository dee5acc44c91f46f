"""Names of the CPU route that the launcher needs without importing verl's CPU modules.

``medsage.plugins.engines.verl_cpu`` registers the platform at import; the launcher only sets the
environment variables that make verl import it, in verl's own processes.
"""

PLATFORM_NAME = "medsage_cpu"
ROLLOUT_NAME = "hf_cpu"
ENV = {"VERL_USE_EXTERNAL_MODULES": "medsage.plugins.engines.verl_cpu", "VERL_PLATFORM": PLATFORM_NAME}
