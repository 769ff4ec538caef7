"""One class per multi-objective method; each declares what it needs (:class:`Needs`)."""

from ._aligned_mtl import AlignedMTL
from ._auto_lambda import AutoLambda
from ._base import Inputs, Method, Needs, Output, get, registry
from ._cagrad import CAGrad
from ._config import ConFIG
from ._cosmos import COSMOS
from ._db_mtl import DBMTL
from ._dualproj import DualProj
from ._dwa import DWA
from ._dynamic_reward_weighting import DynamicRewardWeighting
from ._epo import EPO
from ._ew import EW
from ._excess_mtl import ExcessMTL
from ._fairgrad import FairGrad
from ._famo import FAMO
from ._fixed import Fixed
from ._gls import GLS
from ._graddrop import GradDrop
from ._gradnorm import GradNorm
from ._gradvac import GradVac
from ._imtl_g import IMTLG
from ._imtl_l import IMTLL
from ._log_losses import LogLosses
from ._mgda import MGDA
from ._moco import MoCo
from ._modo import MoDo
from ._nash_mtl import NashMTL
from ._pbi import PBI
from ._pcgrad import PCGrad
from ._pmgda import PMGDA
from ._rep_mtl import RepMTL
from ._rlw import RLW
from ._samo import SAMO
from ._sdmgrad import SDMGrad, SDMGradOS
from ._stch import STCH
from ._tchebycheff import ModifiedTchebycheff, Tchebycheff
from ._upgrad import UPGrad
from ._uw import UW

__all__ = [
    "COSMOS",
    "DBMTL",
    "DWA",
    "EPO",
    "EW",
    "FAMO",
    "GLS",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "PBI",
    "PMGDA",
    "RLW",
    "SAMO",
    "STCH",
    "UW",
    "AlignedMTL",
    "AutoLambda",
    "CAGrad",
    "ConFIG",
    "DualProj",
    "DynamicRewardWeighting",
    "ExcessMTL",
    "FairGrad",
    "Fixed",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "Inputs",
    "LogLosses",
    "Method",
    "MoCo",
    "MoDo",
    "ModifiedTchebycheff",
    "NashMTL",
    "Needs",
    "Output",
    "PCGrad",
    "RepMTL",
    "SDMGrad",
    "SDMGradOS",
    "Tchebycheff",
    "UPGrad",
    "get",
    "registry",
]
