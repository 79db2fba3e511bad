"""DICOM in and out: series and study trees read as volumes with the scanner's geometry, and
results written as derived series or DICOM-SEG.

* ``headers``: recognising DICOM files and reading their headers (pydicom);
* ``frames``: the positioned 2D images of classic, enhanced multi-frame and RT dose files;
* ``series``: grouping files into series, what each series is, splitting several volumes;
* ``slice_grid``: where the slices lie, and the regular grid they are read onto (gantry tilt,
  irregular steps);
* ``pixels``: decoding (compressed syntaxes too) and rescaling;
* ``resample``: reading a tilted or irregular stack onto its regular grid;
* ``reader``: one volume from a folder, tree or file;
* ``write`` and ``seg``: derived image series and DICOM-SEG out.
"""

from revmed.io.dicom.headers import is_dicom_file, is_dicomdir
from revmed.io.dicom.reader import read_dicom_file, read_dicom_series
from revmed.io.dicom.series import SeriesInfo, list_dicom_series

__all__ = ["SeriesInfo", "is_dicom_file", "is_dicomdir", "list_dicom_series", "read_dicom_file",
           "read_dicom_series"]
