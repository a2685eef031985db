//! Errors as text: an error and its chain of sources on one line, for logs, console lines and
//! replies (each error's message names its own operation and leaves the cause to its source).

/// An error and its sources as one line joined by ": ", outermost first
/// ("open the fabric link /dev/vport1p1: No such file or directory (os error 2)").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum SlotError {
        #[error("power on slot 3")]
        Power {
            #[source]
            source: WriteError,
        },
        #[error("no slot 9")]
        NoSlot,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("write 1 to /sys/bus/pci/slots/3/power")]
    struct WriteError {
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn joins_every_source_outermost_first() {
        let errno = std::io::Error::from_raw_os_error(libc::EBUSY);
        let error = SlotError::Power {
            source: WriteError { source: errno },
        };
        assert_eq!(
            error_chain(&error),
            "power on slot 3: write 1 to /sys/bus/pci/slots/3/power: \
             Device or resource busy (os error 16)"
        );
    }

    #[test]
    fn an_error_without_a_source_is_its_message() {
        assert_eq!(error_chain(&SlotError::NoSlot), "no slot 9");
    }
}
