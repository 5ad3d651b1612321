"""TFDS builders, one module per dataset family; data/sources.py maps a dataset name
to its builder and prepares or opens it.

video_lists.py    k400, ucf101, hmdb51, ssv2: the official list files of local videos
                  or frame folders
image_folder.py   image_folder: an ImageNet-layout folder as one-frame videos
video_folder.py   video_folder: the user's own videos (class folders or a CSV, labelled
                  or not), several side by side as video_folder/NAME; the label map
                  (classes.txt) that names a run's classes
moving_digits.py  moving_digits: the embedded dataset, rendered on first use
manual.py         ManualBuilder: the base of the builders over files a user supplies
ava.py            ava: AVA v2.2 key frames from the official annotations and frames, and
                  the readers of those files (the mAP evaluation reads them too)
"""
