//! configfile
