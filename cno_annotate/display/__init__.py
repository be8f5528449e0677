"""Display logic without widgets: planes, windowing, markers, linked views.

The Qt front end (``ui``) draws what these objects compute; everything here
runs and is tested without a display.
"""
