"""A QM9 folder in qm9pack's on-disk format (qm9_part*.csv), for the tests: five real rows of qm9pack
1.0.3 (methane, ammonia, water, formaldehyde, methanol: GDB indices 1, 2, 3, 6, 8) and copies of them with
jittered coordinates and properties."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

HEADER = (
    "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,Harmonic_Freq_cm"
    "i,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,LUMO_au,HOMO_LUMO_gap_au,"
    "R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,Enthalphy_298K_au,GibbsFreeEnergy_2"
    "98K_au,Heatcapacity_Cv_cal_mol_K"
)
#: real qm9pack rows, verbatim
REAL_ROWS = (
    (
        '"dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]","[\'C\',\'H\',\'H\',\'H\',\'H\']","[[-0.0'
        "126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],[1.0117308433,1.46"
        "37511618,0.0002765748],[-0.540815069,1.4475266138,-0.8766437152],[-0.5238136345,1.4379326443,0.9"
        '063972942]]","[-0.535689,0.133921,0.133922,0.133923,0.133923]","[1341.307,1341.3284,1341.365,156'
        '2.6731,1562.7453,3038.3205,3151.6034,3151.6788,3151.7078]",157.7118,157.70997,157.70699,0.,13.21'
        ",-0.3877,0.1171,0.5048,35.3641,0.044749,-40.47893,-40.476062,-40.475117,-40.498597,6.469"
    ),
    (
        '"dsgdb9nsd_000002.xyz",2,"N","InChI=1S/H3N/h1H3",4,"[3,0,1,0,0]","[\'N\',\'H\',\'H\',\'H\']","[[-0.04042'
        "60543,1.0241077531,0.0625637998],[0.0172574639,0.0125452063,-0.0273771593],[0.9157893661,1.35874"
        '51948,-0.0287577581],[-0.5202777357,1.3435321258,-0.7755426124]]","[-0.707143,0.235712,0.235712,'
        '0.23572]","[1103.8733,1684.1158,1684.3072,3458.7145,3575.2414,3575.3343]",293.60975,293.54111,19'
        "1.39397,1.6256,9.46,-0.257,0.0829,0.3399,26.1563,0.034358,-56.525887,-56.523026,-56.522082,-56.5"
        "44961,6.316"
    ),
    (
        '"dsgdb9nsd_000003.xyz",3,"O","InChI=1S/H2O/h1H2",3,"[2,0,0,1,0]","[\'O\',\'H\',\'H\']","[[-0.034360495'
        "1,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,0.0015346341],[0.8717903737,1.3007924048"
        ',0.0006931336]]","[-0.589706,0.294853,0.294853]","[1671.4222,3803.6305,3907.698]",799.58812,437.'
        "90386,282.94545,1.8511,6.31,-0.2928,0.0687,0.3615,19.0002,0.021375,-76.404702,-76.401867,-76.400"
        "922,-76.422349,6.002"
    ),
    (
        '"dsgdb9nsd_000006.xyz",6,"C=O","InChI=1S/CH2O/c1-2/h1H2",4,"[2,1,0,1,0]","[\'C\',\'O\',\'H\',\'H\']","[['
        "-0.0139776956,1.1802114286,0.0077524981],[0.0023139861,-0.0196636557,0.0021610727],[0.9149602868"
        ',1.789511172,0.0039565555],[-0.9591097173,1.7640179751,0.0171828436]]","[-0.031232,-0.165864,0.0'
        '98548,0.098548]","[1201.9838,1272.5136,1544.4691,1846.4364,2882.3231,2929.819]",285.48839,38.982'
        "3,34.29892,2.1089,14.18,-0.267,-0.0406,0.2263,59.9891,0.026603,-114.483613,-114.480746,-114.4798"
        "02,-114.505268,6.413"
    ),
    (
        "\"dsgdb9nsd_000008.xyz\",8,\"CO\",\"InChI=1S/CH4O/c1-2/h2H,1H3\",6,\"[4,1,0,1,0]\",\"['C','O','H','H','H'"
        ",'H']\",\"[[-0.0082881667,1.3904697792,-0.0056006901],[-0.0079703813,-0.0250453723,0.0203060595],["
        "1.0065833848,1.8155636589,0.0034833514],[-0.5465747513,1.7991697458,-0.8739012577],[-0.522888714"
        '2,1.7255524029,0.8990732632],[0.4414201887,-0.3335442546,-0.7715205863]]","[-0.22018,-0.403148,0'
        '.102778,0.102783,0.131574,0.286193]","[324.3956,1056.1405,1093.6834,1175.9126,1389.2644,1486.456'
        '9,1495.0811,1513.3431,2980.1707,3024.4878,3106.7864,3832.1018]",127.83497,24.85872,23.97872,1.52'
        "58,16.97,-0.2653,0.0784,0.3437,83.794,0.051208,-115.679136,-115.675816,-115.674872,-115.701876,8"
        ".751"
    ),
)

_NUMERIC_FROM = "RotA_GHz"  # this column and the ones after it are plain numbers


def _format(row: list[str], header: list[str]) -> str:
    """One CSV line as qm9pack writes it: text fields quoted, numbers bare."""
    first_number = header.index(_NUMERIC_FROM)
    bare = {header.index("Index"), header.index("N_atoms"), *range(first_number, len(header))}
    return ",".join(v if i in bare else f'"{v}"' for i, v in enumerate(row))


def _jittered(row: list[str], header: list[str], index: int, g: torch.Generator) -> list[str]:
    out = list(row)
    col = {c: header.index(c) for c in header}
    out[col["XYZ_file"]] = f"dsgdb9nsd_{index:06d}.xyz"
    out[col["Index"]] = str(index)
    xyz = torch.tensor([float(v) for v in row[col["XYZ_Ang"]].replace("[", "").replace("]", "").split(",")])
    xyz = xyz + 0.02 * (torch.rand(xyz.shape, generator=g, dtype=torch.float64) - 0.5)
    out[col["XYZ_Ang"]] = (
        "["
        + ",".join(
            "[" + ",".join(f"{v:.10g}" for v in xyz[i : i + 3].tolist()) + "]" for i in range(0, len(xyz), 3)
        )
        + "]"
    )
    for name in header[col[_NUMERIC_FROM] :]:
        v = float(row[col[name]]) * (1 + 0.002 * (float(torch.rand((), generator=g)) - 0.5))
        out[col[name]] = f"{v:.8g}"
    return out


def write_qm9_fixture(folder: Path, n: int = 30, parts: int = 2, seed: int = 0) -> Path:
    """``n`` molecules (the real rows first, then jittered copies) in ``parts`` files
    ``qm9_part{1..parts}.csv`` under ``folder``; returns the folder."""
    header = HEADER.split(",")
    real = [next(csv.reader(io.StringIO(r))) for r in REAL_ROWS]
    g = torch.Generator().manual_seed(seed)
    rows = [_format(r, header) for r in real][:n]
    for k in range(len(rows), n):
        rows.append(_format(_jittered(real[k % len(real)], header, 1000 + k, g), header))
    folder.mkdir(parents=True, exist_ok=True)
    per = -(-len(rows) // parts)
    for p in range(parts):
        chunk = rows[p * per : (p + 1) * per]
        (folder / f"qm9_part{p + 1}.csv").write_text("\n".join([HEADER, *chunk]) + "\n")
    return folder
