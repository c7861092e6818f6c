//! The helpdesk REST resources, as an API client uses them.
