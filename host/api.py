"""The public library API of the host: what ``chamlab`` commands call, and what ``adapt``,
``calibrate`` and farm runs (:func:`run_farm`) call too. Import from here; the modules behind it may move.

    from chamlab.host import api
    device = api.load_registry().get("local-cpu")
    spec = api.resolve_run(device, threads=1)
    space = api.SPACES.get("macro-cifar10")
    report = api.profile(spec, space, None, out=Path("luts/local-cpu.parquet"))
    pred = api.predict(space, space.parse("01201201"), lut=api.Lut.read(report.lut_path),
                       lut_path=report.lut_path, target="local-cpu")
    meas = api.measure(spec, space, space.parse("01201201"))
    print(pred.to_json()["latency_ms"], meas.to_json()["measured_p50_ms"])
    # energy per inference, mJ above idle: pred.energy_mj (None without energy rows, pred.energy_note
    # says why); api.predict(..., energy="require") or api.predict_energy() refuse with NoEnergyError

Every report has ``to_json()`` (the keys of docs/cli.md). Errors are
:class:`~chamlab.core.errors.ChamlabError` subclasses with ``message``, ``hint`` and ``exit_code``.
"""

from chamlab.chamnet.spaces import SPACES
from chamlab.host.devices.config import DeviceRegistry, load_registry
from chamlab.host.devices.transports import TRANSPORTS, DeviceConfig, Transport, open_transport
from chamlab.host.luts.lut import Lut, MeasurementSet, add_rows
from chamlab.host.measurement.networks import (
    NetworkMeasurement,
    ProgramMeasurement,
    ProgramReport,
    RepeatedMeasurement,
    RepeatPolicy,
    export_network_int8,
    inspect_program,
    measure_networks,
    measure_program,
    measure_program_runs,
    measure_repeated,
    network_item,
)
from chamlab.host.measurement.pipeline import (
    NullProgress,
    PipelineRun,
    Progress,
    RunSpec,
    claim_device,
    resolve_run,
    run_items,
)
from chamlab.host.measurement.profiling import (
    EXHAUSTIVE_LIMIT,
    ProfileReport,
    default_archs,
    plan_ops,
    profile,
)
from chamlab.host.prediction import calibrate as calibration
from chamlab.host.prediction.adaptive import AdaptivePolicy, AdaptiveReport, profile_adaptive
from chamlab.host.prediction.calibrate import CalibrationReport, calibrate
from chamlab.host.prediction.predict import (
    CachedPrediction,
    EnergyModel,
    EnergyPrediction,
    LatencyModel,
    PredictionReport,
    QuantityModel,
    choose_measurement_set,
    default_dtype,
    default_lut_path,
    energy_refusal,
    find_lut,
    op_model,
    predict,
    predict_energy,
    predict_latency,
)
from chamlab.host.workflows.adapt import AdaptOptions, AdaptReport
from chamlab.host.workflows.adapt_run import adapt
from chamlab.host.workflows.evaluate import (
    EvaluationError,
    EvaluationReport,
    check_evaluation_device,
    evaluate_program,
)
from chamlab.host.workflows.farm import FarmReport, run_farm
from chamlab.host.workflows.manifest import Manifest, build_manifest, read_manifest, write_manifest
from chamlab.host.workflows.measure import MeasureReport, measure
from chamlab.host.workflows.oracles import ORACLES, choose_oracle, fit_space
from chamlab.host.workflows.search import SearchOptions, search
from chamlab.host.workflows.search import check_run as check_search

__all__ = [
    "EXHAUSTIVE_LIMIT",
    "ORACLES",
    "SPACES",
    "TRANSPORTS",
    "AdaptOptions",
    "AdaptReport",
    "AdaptivePolicy",
    "AdaptiveReport",
    "CachedPrediction",
    "CalibrationReport",
    "DeviceConfig",
    "DeviceRegistry",
    "EnergyModel",
    "EnergyPrediction",
    "EvaluationError",
    "EvaluationReport",
    "FarmReport",
    "LatencyModel",
    "Lut",
    "Manifest",
    "MeasureReport",
    "MeasurementSet",
    "NetworkMeasurement",
    "NullProgress",
    "PipelineRun",
    "PredictionReport",
    "ProfileReport",
    "ProgramMeasurement",
    "ProgramReport",
    "Progress",
    "QuantityModel",
    "RepeatPolicy",
    "RepeatedMeasurement",
    "RunSpec",
    "SearchOptions",
    "Transport",
    "adapt",
    "add_rows",
    "build_manifest",
    "calibrate",
    "calibration",
    "check_evaluation_device",
    "check_search",
    "choose_measurement_set",
    "choose_oracle",
    "claim_device",
    "default_archs",
    "default_dtype",
    "default_lut_path",
    "energy_refusal",
    "evaluate_program",
    "export_network_int8",
    "find_lut",
    "fit_space",
    "inspect_program",
    "load_registry",
    "measure",
    "measure_networks",
    "measure_program",
    "measure_program_runs",
    "measure_repeated",
    "network_item",
    "op_model",
    "open_transport",
    "plan_ops",
    "predict",
    "predict_energy",
    "predict_latency",
    "profile",
    "profile_adaptive",
    "read_manifest",
    "resolve_run",
    "run_farm",
    "run_items",
    "search",
    "write_manifest",
]
