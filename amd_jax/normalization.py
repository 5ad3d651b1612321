"""The pixel statistics that clips are normalised with, (x / 255 − mean) / std per RGB
channel on the 0–1 scale: read by the steps and losses (on device) and by the data
pipelines (which pad and erase in the colour that normalises to 0 or to noise).
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AVA detection normalises with VideoMAE-AVA's pixel statistics (0–255 scale).
AVA_MEAN = (122.7717 / 255, 115.9465 / 255, 102.9801 / 255)
AVA_STD = (57.375 / 255,) * 3
