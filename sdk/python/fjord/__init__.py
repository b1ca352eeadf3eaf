"""fjord: the Python SDK for fjordd, fjord's fine-tuning daemon.

    import fjord
    client = fjord.Client()            # endpoint and keys from FJORD_* or ~/.config/fjord/client.yaml
    f = client.files.upload("train.jsonl")
    job = client.jobs.create(model="llama-3.2-1b", training_file=f.id,
                             hyperparameters={"epochs": 3})
    job = job.wait(progress=True)
    client.adapters.download(job.id, "adapter")

See docs/python-sdk.md for the API reference, docs/protocol.md for the wire
protocol it speaks. Depends on pyzmq only.

The modules, each importing only those above it: errors, keys, config
(settings), types (the inert data classes), _wire/_json (the codec),
reports (the evaluation report's data classes), connection (socket, CURVE,
retries, heartbeats, ``call``), _download (checked chunked downloads), events
(event streams), files, adapters, models, jobs, evaluations (the resources),
client (Client).
"""

from .adapters import Adapters
from .client import Client
from .evaluations import Evaluations
from .events import EventStream
from .files import Files
from .jobs import BoundJob, BoundJobPage, Jobs
from .models import Models
from .errors import (
    AlreadyExistsError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FjordError,
    InternalError,
    InvalidArgumentError,
    JobFailedError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)
from .keys import KeyPair, generate_keypair, load_secret_key_file, write_key_files
from .reports import (
    CandidateResult,
    DatasetReport,
    EvaluationReport,
    Interval,
    JudgePair,
    JudgeResult,
    PairResult,
    Rank,
    Sample,
    WinRate,
)
from .types import (
    FINAL_STATUSES,
    JOB_STATUSES,
    AdapterFile,
    Candidate,
    Checkpoint,
    EvaluationSettings,
    Event,
    FileObject,
    Hyperparameters,
    Job,
    JobError,
    JobPage,
    LoraConfig,
    Model,
    PingInfo,
    StorageUsage,
)

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = [
    "Client", "EventStream", "Files", "Jobs", "Adapters", "Models", "BoundJob", "BoundJobPage",
    "FjordError", "InvalidArgumentError", "NotFoundError", "AlreadyExistsError", "PermissionDeniedError",
    "UnauthenticatedError", "ResourceExhaustedError", "FailedPreconditionError", "UnimplementedError",
    "UnavailableError", "InternalError", "DeadlineExceededError", "DataLossError", "JobFailedError",
    "KeyPair", "generate_keypair", "load_secret_key_file", "write_key_files",
    "JOB_STATUSES", "FINAL_STATUSES", "AdapterFile", "Checkpoint", "Event", "FileObject", "Hyperparameters",
    "Job", "JobError", "JobPage", "LoraConfig", "Model", "PingInfo", "StorageUsage",
    "Evaluations", "Candidate", "EvaluationSettings", "EvaluationReport", "DatasetReport", "CandidateResult",
    "Interval", "PairResult", "Rank", "Sample", "JudgeResult", "JudgePair", "WinRate",
    "__version__", "PROTOCOL_VERSION",
]
