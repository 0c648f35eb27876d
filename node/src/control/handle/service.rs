//! `service.*`.

use super::{answer, misrouted};
use crate::control::api::{method, ApiError, Command, Done};
use crate::control::server::Answer;
use crate::services::Services;

pub(super) async fn call(services: &Services, command: Command) -> Result<Answer, ApiError> {
    match command {
        Command::ServiceAdvertise(a) => {
            services.advertise(&a.name, a.meta).await?;
            answer::<method::ServiceAdvertise>(Done {})
        }
        Command::ServiceWithdraw(a) => {
            services.withdraw(&a.name).await?;
            answer::<method::ServiceWithdraw>(Done {})
        }
        Command::ServiceFind(a) => {
            let found = services.find(&a.name).await?;
            answer::<method::ServiceFind>(found.into_iter().map(Into::into).collect())
        }
        Command::ServiceLs(_) => answer::<method::ServiceLs>(services.advertised()),
        other => Err(misrouted(&other)),
    }
}
